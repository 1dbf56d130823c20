//! Worker: plain `tikv_jemallocator::Jemalloc` (profiling compiled in, as
//! features unify across alloc-bench, but off: no `malloc_conf` here, so
//! `opt.prof` is false; `setup` checks that).

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    alloc_bench::harness::worker_main(alloc_bench::harness::Hooks {
        setup: Some(alloc_bench::peers::jemalloc_check_prof_off),
        ..alloc_bench::harness::Hooks::plain("jemalloc")
    });
}
