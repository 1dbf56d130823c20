//! Worker: `dhat::Alloc` with a heap profiler running (every allocation
//! tracked with its backtrace): the full-tracking reference. The profiler is
//! leaked, never dropped, so no JSON is written inside or after the timing.

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn setup() {
    let p = dhat::Profiler::builder().build();
    std::mem::forget(p);
}

fn estimate() -> Result<alloc_bench::accuracy::Estimate, String> {
    let s = dhat::HeapStats::get();
    Ok(alloc_bench::accuracy::Estimate {
        total_inuse: Some(s.curr_bytes as f64),
        note: format!(
            "totals only (dhat::HeapStats; per-site needs its JSON): {} B allocated in total",
            s.total_bytes
        ),
        ..Default::default()
    })
}

fn main() {
    alloc_bench::harness::worker_main(alloc_bench::harness::Hooks {
        setup: Some(setup),
        estimate: Some(estimate),
        ..alloc_bench::harness::Hooks::plain("dhat")
    });
}
