//! The writer side's shared pprof machinery: protobuf messages, the profile builder,
//! `/proc/self/maps`, ELF build IDs and the legacy `debug=1` text formats.
//!
//! Called by the heap, CPU and count profile writers; never by the allocator or a signal
//! handler (everything here allocates, reads files and may take `backtrace`'s lock).
//! Calls go one way: profile writers → [`builder`] → [`proto`] (prost encoding).

pub mod builder;
pub mod elf;
pub mod maps;
pub mod proto;
pub mod text;
