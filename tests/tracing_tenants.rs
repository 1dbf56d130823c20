//! `heaprof::tracing::LabelLayer` on a multi-threaded tokio runtime: tasks instrumented with
//! spans `tenant=a` and `tenant=b` move between workers, and the heap profile at rate 1,
//! split by `go tool pprof -tagfocus tenant=…`, shows exactly each tenant's bytes in use and
//! allocated (`tenants/mod.rs`).
// tokio is not a dependency under `--cfg loom` (see Cargo.toml).
#![cfg(not(loom))]

mod common;
mod tenants;

use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

#[test]
fn span_labels_follow_tasks_across_workers() {
    let subscriber = tracing_subscriber::registry().with(heaprof::tracing::LabelLayer::default());
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let profile = tenants::run(|tenant, task| {
        Box::pin(task.instrument(tracing::info_span!("tenant_task", tenant)))
    });
    tenants::check(&profile, "tracing_tenants.pb.gz");
}
