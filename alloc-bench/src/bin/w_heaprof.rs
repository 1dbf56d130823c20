//! Worker: `heaprof::ProfilingAllocator<System>`. The sampling rate comes from
//! `--rate BYTES` or `HEAPROF_RATE` and is applied before the workload starts
//! (otherwise the library default applies).

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

fn write_profile(path: &std::path::Path) -> std::io::Result<()> {
    let f = std::io::BufWriter::new(std::fs::File::create(path)?);
    heaprof::write_heap_profile(f)
}

fn main() {
    alloc_bench::harness::worker_main(alloc_bench::harness::Hooks {
        config: "heaprof",
        set_rate: Some(heaprof::set_sample_rate),
        get_rate: Some(heaprof::sample_rate),
        write_profile: Some(write_profile),
    });
    if std::env::var_os("HEAPROF_BENCH_UNWIND_STATS").is_some() {
        let s = heaprof::__private::stats();
        eprintln!(
            "unwind: suffix hits {} steps {} pool exhausted {}",
            s.suffix_hits, s.steps, s.pool_exhausted
        );
    }
}
