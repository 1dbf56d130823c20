//! Worker: plain `std::alloc::System` (the baseline).

#[global_allocator]
static ALLOC: std::alloc::System = std::alloc::System;

fn main() {
    alloc_bench::harness::worker_main(alloc_bench::harness::Hooks {
        config: "system",
        set_rate: None,
        get_rate: None,
        write_profile: None,
    });
}
