//! The encoding layer: the pprof machinery every profile kind writes through, and the
//! reader. Protobuf messages ([`proto`]), the profile builder ([`builder`]), symbolization
//! ([`symbolize`]), `/proc/self/maps` and ELF build IDs ([`maps`], [`elf`]), the legacy
//! `debug=1` text formats ([`text`]), the leading-frame trimming both apply and the helpers
//! of trimming policies ([`trim`]), stacks merged and the pseudo-frames ([`stack_groups`]),
//! the count-profile writer ([`count_writer`]), reading profiles back ([`read`]), the `top`
//! table ([`top`]) and delta profiles ([`delta`]). Knows no profile kind.
//!
//! Called by the heap, CPU and count profile writers; never by the allocator or a signal
//! handler (everything here allocates, reads files and may take `backtrace`'s lock).
//! Calls go one way: profile writers → [`builder`] → [`proto`] (prost encoding).

pub mod builder;
pub(crate) mod count_writer;
pub(crate) mod delta;
pub mod elf;
pub mod maps;
pub mod proto;
pub(crate) mod read;
pub(crate) mod stack_groups;
pub mod symbolize;
pub mod text;
pub(crate) mod top;
pub(crate) mod trim;
