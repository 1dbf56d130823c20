//! Labels split a heap profile by request kind: two label values doing known amounts of
//! allocation; `go tool pprof -tagfocus` selects each.

mod common;

use std::hint::black_box;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

#[inline(never)]
fn serve(n: usize) -> Vec<Vec<u8>> {
    black_box((0..n).map(|i| vec![i as u8; 1000]).collect())
}

#[test]
fn heap_samples_carry_labels() {
    heaprof::set_heap_profile_rate(1);
    black_box(vec![0u8; 1 << 20]);
    let checkout = heaprof::with_labels(&[("request", "checkout")], || serve(3000));
    let search = {
        let _g = heaprof::Labels::new(&[("request", "search")]).enter();
        serve(1000)
    };
    // Outside any label scope again.
    let plain = serve(500);

    let mut out = Vec::new();
    heaprof::write_heap_profile(&mut out).unwrap();
    let p = common::decode(&out);
    let s = |i: i64| p.string_table[i as usize].as_str();
    let mut by_request = std::collections::HashMap::<String, i64>::new();
    for sample in &p.sample {
        if !common::stack_names(&p, sample)
            .iter()
            .any(|n| n.contains("serve"))
        {
            continue;
        }
        let req = sample
            .label
            .iter()
            .find(|l| s(l.key) == "request")
            .map(|l| s(l.str).to_string())
            .unwrap_or_default();
        *by_request.entry(req).or_default() += sample.value[3];
    }
    // Each serve(n) keeps n blocks of 1000 bytes plus its Vec of n·24 bytes; rate 1: exact.
    assert_eq!(by_request["checkout"], 3000 * 1024);
    assert_eq!(by_request["search"], 1000 * 1024);
    assert_eq!(by_request[""], 500 * 1024);

    let f = common::write_scratch("labels.pb.gz", &out);
    if let Some(top) = common::go_pprof(&["-top", "-unit=B", "-tagfocus=request=checkout", &f]) {
        // Only the checkout samples: 3,000 blocks of 1000 bytes and their 72,000-byte Vec,
        // flat in `serve` and (unoptimised) its closure. In bytes: pprof's automatic unit
        // depends on the profile's total.
        let flat: i64 = top
            .lines()
            .filter(|l| l.contains("serve"))
            .map(|l| {
                let v = l.split_whitespace().next().unwrap_or_default();
                v.trim_end_matches('B').parse::<i64>().unwrap_or(0)
            })
            .sum();
        assert_eq!(flat, 3_072_000, "{top}");
    }
    black_box((checkout, search, plain));
}
