//! The profile kinds: each records its own events (or reads the allocator's stores) and
//! writes itself through the encoding layer ([`crate::pprof`]).
//!
//! [`heap`] (`heap`, `allocs`, `heap_peak`), [`custom`] (Go's `NewProfile`),
//! [`threadcreate`], [`threads`] (`goroutine`), [`block`] and [`mutex`] (fed by the
//! [`sync`] wrappers, with [`waiters`]), [`cpu`], and the resident-set breakdown the heap
//! profiles carry ([`rss`]).

pub(crate) mod block;
pub(crate) mod cpu;
pub(crate) mod custom;
pub(crate) mod heap;
pub(crate) mod mutex;
pub(crate) mod rss;
pub mod sync;
pub(crate) mod threadcreate;
pub(crate) mod threads;
pub(crate) mod waiters;
