//! Worker: `heaprof::ProfilingAllocator<tikv_jemallocator::Jemalloc>`, compared
//! with `w_jemalloc` (its own inner allocator). Rate as in `w_heaprof`.

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator<tikv_jemallocator::Jemalloc> =
    heaprof::ProfilingAllocator::new(tikv_jemallocator::Jemalloc);

fn main() {
    alloc_bench::harness::worker_main(alloc_bench::peers::heaprof_hooks("heaprof-je"));
}
