//! Labels split a CPU profile too: one thread does 3 units of work under
//! `request=checkout` and 1 unit under `request=search`; the samples carry the label in
//! force when the signal landed, in a 2.5:1 to 3.5:1 ratio, and `go tool pprof -tagfocus`
//! selects them.

mod common;

use std::hint::black_box;

#[inline(never)]
fn spin(units: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..units * 4096 {
        x = black_box(x.rotate_left(5) ^ i).wrapping_mul(0x2545_f491_4f6c_dd1d);
    }
    x
}

#[test]
fn cpu_samples_carry_labels() {
    heaprof::set_cpu_profile_rate(250);
    let out = common::SharedBuf::default();
    heaprof::start_cpu_profile(out.clone()).unwrap();
    // Interleave the two kinds of work so both see the same machine conditions, for at
    // least 1.2 s of this thread's CPU time (~300 samples at 250 Hz) whatever the build's
    // speed.
    let end = common::thread_cpu_nanos() + 1_200_000_000;
    let mut rounds = 0;
    while rounds < 30 || common::thread_cpu_nanos() < end {
        rounds += 1;
        heaprof::with_labels(&[("request", "checkout")], || {
            black_box(spin(black_box(600)))
        });
        heaprof::with_labels(&[("request", "search")], || black_box(spin(black_box(200))));
    }
    heaprof::stop_cpu_profile();
    let bytes = out.bytes();
    let p = common::decode(&bytes);
    let s = |i: i64| p.string_table[i as usize].as_str();
    let mut by = std::collections::HashMap::<String, i64>::new();
    for sample in &p.sample {
        if !common::stack_names(&p, sample)
            .iter()
            .any(|n| n.contains("spin"))
        {
            continue;
        }
        let req = sample
            .label
            .iter()
            .find(|l| s(l.key) == "request")
            .map(|l| s(l.str).to_string());
        *by.entry(req.unwrap_or_default()).or_default() += sample.value[0];
    }
    let (c, q) = (by["checkout"] as f64, by["search"] as f64);
    eprintln!(
        "samples: checkout {c}, search {q}, unlabelled {:?}",
        by.get("")
    );
    assert!(c + q >= 200.0, "enough samples: {by:?}");
    assert!((2.5..=3.5).contains(&(c / q)), "ratio {:.2}: {by:?}", c / q);

    let f = common::write_scratch("cpu_labels.pb.gz", &bytes);
    if let Some(top) = common::go_pprof(&["-top", "-tagfocus=request=search", &f]) {
        assert!(top.contains("spin"), "{top}");
        let total = top
            .lines()
            .find(|l| l.contains("Showing nodes accounting for"))
            .unwrap_or("")
            .to_string();
        eprintln!("{total}");
    }
}
