//! Worker: `pprof_alloc::PprofAlloc` (crates.io `pprof-alloc`) over System
//! with its wrapper sampler at its default 512 KiB rate and frame-pointer
//! stack capture (its default feature).

#[global_allocator]
static ALLOC: pprof_alloc::PprofAlloc = pprof_alloc::PprofAlloc::new().with_pprof();

fn estimate() -> Result<alloc_bench::accuracy::Estimate, String> {
    let bytes = pprof_alloc::generate_pprof().map_err(|e| format!("generate_pprof: {e}"))?;
    alloc_bench::accuracy::estimate_from_pprof(&bytes)
}

fn main() {
    alloc_bench::harness::worker_main(alloc_bench::harness::Hooks {
        estimate: Some(estimate),
        ..alloc_bench::harness::Hooks::plain("pprof-alloc")
    });
}
