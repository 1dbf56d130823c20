//! Label sets stay bounded: 100,000 spans, each with a distinct `request_id` (a field with
//! unbounded values), fill the registry to `heaprof::MAX_LABEL_SETS`; past that, each new
//! set is refused and counted, the registry's own accounting stops growing, the process's
//! malloc'ed bytes do not grow with the spans, and samples taken under the refused sets
//! carry `heaprof.overflow=label_sets`. The count is in the heap, allocs and CPU profiles'
//! comments.

mod common;

use std::collections::HashMap;
use std::hint::black_box;

use heaprof::MAX_LABEL_SETS;
use tracing_subscriber::layer::SubscriberExt;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const SPANS: usize = 100_000;
/// Where memory is first measured: well past the point the registry is full.
const CHECKPOINT: usize = 2 * MAX_LABEL_SETS;
const BLOCK: usize = 5000;
const BLOCKS: usize = 20;

/// One request: a span with a new `request_id`, entered, one small allocation inside.
fn request(id: usize) {
    let span = tracing::info_span!("request", request_id = id);
    let _e = span.enter();
    black_box(vec![0u8; 64]);
}

#[inline(never)]
fn overflowed_site() -> Vec<Vec<u8>> {
    (0..BLOCKS).map(|_| black_box(vec![1u8; BLOCK])).collect()
}

fn decode_profile(name: &str) -> heaprof::__private::proto::Profile {
    let mut out = Vec::new();
    heaprof::lookup(name)
        .unwrap()
        .write_to(&mut out, 0)
        .unwrap();
    common::decode(&out)
}

/// (sets, bytes, overflowed) from `heaprof.label_sets: N of CAP (B bytes)` and
/// `heaprof.label_sets_overflowed: K`.
fn label_stats(c: &HashMap<String, String>) -> (usize, usize, u64) {
    let sets = &c["heaprof.label_sets"];
    let (n, rest) = sets.split_once(" of ").unwrap();
    let (cap, bytes) = rest.split_once(" (").unwrap();
    assert_eq!(cap.parse::<usize>().unwrap(), MAX_LABEL_SETS, "{sets}");
    (
        n.parse().unwrap(),
        bytes.trim_end_matches(" bytes)").parse().unwrap(),
        c["heaprof.label_sets_overflowed"].parse().unwrap(),
    )
}

fn malloc_in_use(c: &HashMap<String, String>) -> i64 {
    c["heaprof.rss.malloc_in_use"].parse().unwrap()
}

#[test]
fn distinct_values_past_the_cap_are_counted_not_kept() {
    let subscriber = tracing_subscriber::registry().with(heaprof::tracing::LabelLayer::default());
    tracing::subscriber::set_global_default(subscriber).unwrap();

    for id in 0..CHECKPOINT {
        request(id);
    }
    // The symbolizer parses debug info as stacks need it and keeps it (tens of MiB in a
    // debug build): a profile written first parses what the requests' stacks need, so the
    // measure below is of the requests alone.
    decode_profile("heap");
    let c1 = common::comments(&decode_profile("heap"));
    let (sets1, bytes1, over1) = label_stats(&c1);
    assert_eq!(sets1, MAX_LABEL_SETS, "full, the overflow set included");
    // One set per request id until the cap (less the overflow set's slot), then each
    // span's set is refused once, when the span is created.
    assert_eq!(over1 as usize, CHECKPOINT - (MAX_LABEL_SETS - 1));

    for id in CHECKPOINT..SPANS {
        request(id);
    }
    let c2 = common::comments(&decode_profile("heap"));
    let (sets2, bytes2, over2) = label_stats(&c2);
    assert_eq!(
        (sets2, bytes2),
        (sets1, bytes1),
        "nothing kept past the cap"
    );
    assert_eq!(over2 - over1, (SPANS - CHECKPOINT) as u64);
    // Without the cap, each request id would have kept its set: bytes1 / sets1 each by the
    // registry's own accounting (at least its pairs' 48 bytes and strings). The process's
    // malloc'ed bytes must grow by less than a tenth of that.
    let per_set = bytes1 / sets1;
    let unbounded = ((SPANS - CHECKPOINT) * per_set) as i64;
    let growth = malloc_in_use(&c2) - malloc_in_use(&c1);
    eprintln!(
        "{sets2} label sets, {bytes2} bytes ({per_set} per set); {over2} refused; malloc in use \
         grew {growth} bytes over {} spans (unbounded sets would take {unbounded})",
        SPANS - CHECKPOINT
    );
    assert!(growth < unbounded / 10, "grew {growth} bytes");

    // Samples under a refused set carry the overflow label.
    heaprof::set_heap_profile_rate(1);
    let kept = tracing::info_span!("request", request_id = SPANS).in_scope(overflowed_site);
    let mut out = Vec::new();
    heaprof::write_heap_profile(&mut out).unwrap();
    drop(kept);
    let p = common::decode(&out);
    let s = |i: i64| p.string_table[i as usize].as_str();
    let overflowed: i64 = p
        .sample
        .iter()
        .filter(|sample| {
            common::stack_names(&p, sample)
                .iter()
                .any(|n| n.contains("overflowed_site"))
        })
        .inspect(|sample| {
            let labels: Vec<_> = sample
                .label
                .iter()
                .map(|l| (s(l.key), s(l.str)))
                .filter(|(k, _)| *k != "bytes")
                .collect();
            assert_eq!(labels, [("heaprof.overflow", "label_sets")]);
        })
        .map(|sample| sample.value[3])
        .sum();
    // The blocks and the Vec holding them.
    let site_bytes = BLOCKS * (BLOCK + std::mem::size_of::<Vec<u8>>());
    assert_eq!(overflowed, site_bytes as i64);
    let f = common::write_scratch("tracing_cap.pb.gz", &out);
    let args = [
        "-top",
        "-unit=B",
        "-sample_index=inuse_space",
        "-tagfocus=heaprof.overflow=label_sets",
        "-focus=overflowed_site",
        &f,
    ];
    if let Some(top) = common::go_pprof(&args) {
        let want = format!("Showing nodes accounting for {site_bytes}B");
        assert!(top.contains(&want), "{args:?}:\n{top}");
    }

    // The count in the allocs and CPU profiles' comments too.
    let over3 = over2 + 1;
    let allocs = common::comments(&decode_profile("allocs"));
    assert_eq!(label_stats(&allocs).2, over3);
    let cpu = common::SharedBuf::default();
    heaprof::start_cpu_profile(cpu.clone()).unwrap();
    heaprof::stop_cpu_profile();
    let cpu = common::comments(&common::decode(&cpu.bytes()));
    assert_eq!(label_stats(&cpu), (sets2, bytes2, over3));
}
