//! Worker: jemalloc's own heap profiler (`tikv-jemallocator` feature
//! `profiling`), switched on by this binary's `_rjem_malloc_conf` symbol:
//! `prof:true,prof_active:true,lg_prof_sample:19` (512 KiB mean, like heaprof's
//! default). `_RJEM_MALLOC_CONF` in the environment overrides it (the driver
//! uses that for `lg_prof_sample:0` and `prof_accum:true`). `setup` verifies
//! `opt.prof` and `prof.active` through `tikv-jemalloc-ctl`; `--write-profile`
//! and `--accuracy` use `prof.dump`.

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A NUL-terminated C string pointer jemalloc reads at initialisation.
#[repr(transparent)]
pub struct ConfPtr(*const std::ffi::c_char);
// SAFETY: points to an immutable 'static byte string; never written.
unsafe impl Sync for ConfPtr {}

/// jemalloc's compile-time-style configuration string (prefixed symbol name).
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: ConfPtr = ConfPtr(c"prof:true,prof_active:true,lg_prof_sample:19".as_ptr());

fn main() {
    alloc_bench::harness::worker_main(alloc_bench::peers::jemalloc_prof_hooks());
}
