//! Signals: SIGUSR1 dumps every 50 ms while two threads allocate heavily, for ~10 s; every
//! dump parses and every signal is served. (Chaining to a foreign handler: `dump_chain.rs`.)

mod common;
mod torture_util;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use torture_util::run_case_ok;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

#[inline(never)]
fn storm_site(i: u64) -> Vec<u8> {
    vec![i as u8; 16 << (i % 12)]
}

/// The storm itself; the caller runs a CPU profile alongside it.
fn signal_storm(secs: u64) -> (heaprof::DumpHandle, u64) {
    let dir = std::env::temp_dir().join(format!("heaprof-storm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let h = heaprof::dump_on_signal(heaprof::DumpConfig {
        dir,
        prefix: "storm".into(),
        profiles: vec!["heap".into(), "allocs".into()],
        ..Default::default()
    })
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let allocs = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let (stop, allocs) = (stop.clone(), allocs.clone());
            std::thread::spawn(move || {
                let mut keep: Vec<Vec<u8>> = Vec::new();
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    keep.push(black_box(storm_site(i)));
                    if keep.len() > 100 {
                        keep.swap_remove((i % 100) as usize);
                    }
                    i += 1;
                }
                allocs.fetch_add(i, Ordering::Relaxed);
            })
        })
        .collect();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        // SAFETY: a signal heaprof handles, to our own pid.
        unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    (h, allocs.load(Ordering::Relaxed))
}

fn storm() {
    heaprof::set_heap_profile_rate(64 * 1024);
    // CPU profiling at 250 Hz (SIGPROF on every busy thread) during the whole storm.
    let cpu = common::SharedBuf::default();
    heaprof::set_cpu_profile_rate(250);
    heaprof::start_cpu_profile(cpu.clone()).unwrap();
    let (h, allocs) = signal_storm(30);
    while h.stats().signals_pending() > 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(heaprof::stop_cpu_profile_result()
        .expect("a CPU profile was running")
        .is_ok());
    let cpu_profile = common::decode(&cpu.bytes());
    let cpu_samples: i64 = cpu_profile.sample.iter().map(|s| s.value[0]).sum();
    println!("storm: CPU profile with {cpu_samples} samples");
    assert!(
        cpu_samples > 100,
        "the CPU profiler sampled the storm: {cpu_samples}"
    );
    let s = h.stats();
    println!("storm: {allocs} allocations, {s:?}");
    assert!(s.signals_received >= 20 && s.dumps_finished >= 2, "{s:?}");
    assert_eq!(s.signals_served, s.signals_received);
    assert_eq!(s.write_errors, 0, "{s:?}");
    assert_eq!(s.dumps_written, s.dumps_finished);
    for seq in 1..=s.dumps_finished {
        for p in ["heap", "allocs"] {
            let bytes = std::fs::read(h.path_for(seq, p)).unwrap();
            assert!(!common::decode(&bytes).sample_type.is_empty());
        }
    }
    std::fs::remove_dir_all(h.dir()).unwrap();
}

/// CPU profiling + SIGUSR1 dumps every 50 ms + heavy sampled allocation on 2 threads, 30 s.
#[test]
fn sigusr1_dumps_and_cpu_profiling_during_heavy_allocation() {
    let out = run_case_ok("child_entry", "storm", &[], Duration::from_secs(240));
    eprintln!(
        "{}",
        out.stdout
            .lines()
            .find(|l| l.starts_with("storm:"))
            .unwrap_or("")
    );
}

#[test]
fn child_entry() {
    match torture_util::case().as_deref() {
        None => {}
        Some("storm") => storm(),
        Some(other) => panic!("unknown case {other}"),
    }
}
