//! Worker: `mimalloc_pprof::MiMalloc` with its sampled heap profiler started
//! at its default rate (`prof::start(0)`, ~512 KiB).

#[global_allocator]
static ALLOC: mimalloc_pprof::MiMalloc = mimalloc_pprof::MiMalloc;

fn setup() {
    if !mimalloc_pprof::prof::start(0) {
        alloc_bench::harness::die("mimalloc_pprof::prof::start(0) returned false");
    }
}

fn estimate() -> Result<alloc_bench::accuracy::Estimate, String> {
    let bytes = mimalloc_pprof::prof::dump_proto_to_vec();
    if bytes.is_empty() {
        return Err("prof::dump_proto_to_vec returned nothing".into());
    }
    alloc_bench::accuracy::estimate_from_pprof(&bytes)
}

fn main() {
    alloc_bench::harness::worker_main(alloc_bench::harness::Hooks {
        setup: Some(setup),
        estimate: Some(estimate),
        ..alloc_bench::harness::Hooks::plain("mimalloc-pprof")
    });
}
