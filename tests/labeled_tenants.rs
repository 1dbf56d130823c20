//! `heaprof::Labeled` without any `tracing` layer, on a multi-threaded tokio runtime: tasks
//! wrapped with `tenant=a` and `tenant=b` move between workers, and the heap profile at
//! rate 1, split by `go tool pprof -tagfocus tenant=…`, shows exactly each tenant's bytes in
//! use and allocated (`tenants/mod.rs`).
// tokio is not a dependency under `--cfg loom` (see Cargo.toml).
#![cfg(not(loom))]

mod common;
mod tenants;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

#[test]
fn labeled_futures_keep_labels_across_workers() {
    let profile = tenants::run(|tenant, task| {
        let labels = heaprof::Labels::new(&[("tenant", tenant)]);
        Box::pin(heaprof::Labeled::new(labels, task))
    });
    tenants::check(&profile, "labeled_tenants.pb.gz");
}
