//! Worker: plain `std::alloc::System` (glibc malloc; the baseline).

#[global_allocator]
static ALLOC: std::alloc::System = std::alloc::System;

fn main() {
    alloc_bench::harness::worker_main(alloc_bench::harness::Hooks::plain("system"));
}
