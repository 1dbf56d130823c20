//! Worker: `heaprof::ProfilingAllocator<System>`. The sampling rate comes from
//! `--rate BYTES` or `HEAPROF_RATE` and is applied before the workload starts
//! (otherwise the library default applies).

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

fn main() {
    alloc_bench::harness::worker_main(alloc_bench::peers::heaprof_hooks("heaprof"));
}
