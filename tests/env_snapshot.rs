//! The `HEAPROF_*` variables are read once, at process start: a thread that changes the
//! environment while the first samples are taken neither races with heaprof's reads nor
//! changes the values in force, and a `set_var` after start changes nothing. Each case runs
//! in a child process (`torture_util`) whose initial environment is set by the test.

mod common;
mod torture_util;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use torture_util::run_case_ok;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const RUNNER: &str = "child_entry";
const T: Duration = Duration::from_secs(120);
/// The child's environment at start: capacities that are not the defaults, and sampling
/// off so that the tables are created (and the capacities read) only when the case says.
const START_ENV: &[(&str, &str)] = &[
    ("HEAPROF_RATE", "0"),
    ("HEAPROF_STACKS", "1000"),
    ("HEAPROF_BUCKETS", "2000"),
];

fn heap_comments() -> Vec<String> {
    let mut out = Vec::new();
    heaprof::write_heap_profile(&mut out).unwrap();
    let p = common::decode(&out);
    p.comment
        .iter()
        .map(|&i| p.string_table[i as usize].clone())
        .collect()
}

/// Fails unless the tables were created with the capacities of [`START_ENV`].
fn assert_start_capacities() {
    let c = heap_comments();
    let has = |prefix: &str, cap: &str| {
        c.iter()
            .any(|l| l.starts_with(prefix) && l.ends_with(&format!(" of {cap}")))
    };
    assert!(has("heaprof.stacks:", "1000"), "{c:#?}");
    assert!(has("heaprof.buckets:", "2000"), "{c:#?}");
}

#[inline(never)]
fn first_samples(t: usize) -> Vec<Vec<u8>> {
    black_box((0..2000).map(|i| vec![t as u8; 64 + i % 512]).collect())
}

/// A thread sets and removes `HEAPROF_*` variables (and enough others that glibc grows and
/// frees its `environ` array) in a tight loop while four threads take their first samples
/// at a 4 KiB rate (capacities, rate and seed are all first read then).
fn flipping() {
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let flipper = {
        let (stop, rounds) = (stop.clone(), rounds.clone());
        std::thread::spawn(move || {
            let pads: Vec<String> = (0..32).map(|k| format!("HEAPROF_TEST_PAD_{k}")).collect();
            while !stop.load(Ordering::Relaxed) {
                std::env::set_var("HEAPROF_STACKS", "5");
                std::env::set_var("HEAPROF_BUCKETS", "not a number");
                std::env::set_var("HEAPROF_SEED", "neither");
                for p in &pads {
                    std::env::set_var(p, "x");
                }
                for p in &pads {
                    std::env::remove_var(p);
                }
                std::env::remove_var("HEAPROF_STACKS");
                std::env::remove_var("HEAPROF_BUCKETS");
                rounds.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while rounds.load(Ordering::Relaxed) < 3 {
        std::thread::yield_now();
    }
    heaprof::set_heap_profile_rate(4096);
    let workers: Vec<_> = (0..4)
        .map(|t| std::thread::spawn(move || first_samples(t).len()))
        .collect();
    for w in workers {
        assert_eq!(w.join().unwrap(), 2000);
    }
    assert_start_capacities();
    stop.store(true, Ordering::Relaxed);
    flipper.join().unwrap();
}

#[test]
fn environment_changed_by_a_thread_during_the_first_samples() {
    let out = run_case_ok(RUNNER, "flipping", START_ENV, T);
    // The values set by the flipping thread were never read (they would each warn).
    assert!(!out.stderr.contains("heaprof: ignoring"), "{}", out.stderr);
}

/// `set_var` after start, before the first sample and before `init_from_env`: nothing
/// changes (documented: the variables are read once, at process start).
fn set_after_start() {
    std::env::set_var("HEAPROF_STACKS", "5");
    std::env::set_var("HEAPROF_DUMP_SIGNAL", "USR2");
    std::env::set_var("HEAPROF_RATE", "1");
    heaprof::set_heap_profile_rate(1);
    black_box(first_samples(0));
    assert_start_capacities();
    assert!(
        heaprof::init_from_env().dump.is_none(),
        "DUMP_SIGNAL was set after start"
    );
}

#[test]
fn set_var_after_start_changes_nothing() {
    let out = run_case_ok(RUNNER, "set_after_start", START_ENV, T);
    assert!(!out.stderr.contains("heaprof:"), "{}", out.stderr);
}

#[test]
fn child_entry() {
    match torture_util::case().as_deref() {
        None => {}
        Some("flipping") => flipping(),
        Some("set_after_start") => set_after_start(),
        Some(other) => panic!("unknown case {other}"),
    }
}
