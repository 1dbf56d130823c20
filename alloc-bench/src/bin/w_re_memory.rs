//! Worker: `re_memory::AccountingAllocator<System>` with callstack tracking
//! on (`set_tracking_callstacks(true)`, default options: < 1 KiB untracked,
//! 1 KiB – 1 MiB stochastically sampled, larger fully tracked).

use re_memory::accounting_allocator;

#[global_allocator]
static ALLOC: re_memory::AccountingAllocator<std::alloc::System> =
    re_memory::AccountingAllocator::new(std::alloc::System);

fn setup() {
    accounting_allocator::set_tracking_callstacks(true);
}

fn estimate() -> Result<alloc_bench::accuracy::Estimate, String> {
    use alloc_bench::accuracy::{Estimate, CHURN_NAME, KEEP_NAME};
    let stats = accounting_allocator::tracking_stats().ok_or("tracking is off")?;
    let total = accounting_allocator::global_allocs().map_or(0, |c| c.size);
    let (mut keep, mut churn) = (0f64, 0f64);
    for cs in &stats.top_callstacks {
        let bt = cs.readable_backtrace.to_string();
        let est = cs.estimated().size as f64;
        if bt.contains(KEEP_NAME) {
            keep += est;
        } else if bt.contains(CHURN_NAME) {
            churn += est;
        }
    }
    Ok(Estimate {
        keep_inuse: Some(keep),
        churn_inuse: Some(churn),
        total_inuse: Some(total as f64),
        note: format!(
            "live-only tracker (no allocated totals), top {} callstacks; total = exact live counter",
            stats.top_callstacks.len()
        ),
        ..Default::default()
    })
}

fn main() {
    alloc_bench::harness::worker_main(alloc_bench::harness::Hooks {
        setup: Some(setup),
        estimate: Some(estimate),
        ..alloc_bench::harness::Hooks::plain("re_memory")
    });
}
