//! Worker: `mimalloc_pprof::MiMalloc` with its profiler built in (feature
//! `pprof`) but never started: the inner allocator of `w_mimalloc_pprof`.

#[global_allocator]
static ALLOC: mimalloc_pprof::MiMalloc = mimalloc_pprof::MiMalloc;

fn main() {
    alloc_bench::harness::worker_main(alloc_bench::harness::Hooks::plain("mimalloc"));
}
