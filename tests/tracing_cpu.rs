//! CPU samples follow `tracing` spans across tokio workers: tasks under span `tenant=a`
//! run 3 times as many polls as tasks under `tenant=b`, each poll burning the same CPU time,
//! on a 4-worker runtime, yielding between polls. The samples in `burn` split 3:1 between
//! the two labels within sampling error.
//!
//! The bound: each sample in `burn` falls under `a` with probability `p`, the share of the
//! burning CPU time spent under `a` (3/4 by construction; also measured per burn with the
//! thread CPU clock), so the count under `a` out of `n` is at most as spread as a
//! Binomial(n, p) (a per-thread CPU timer samples at regular intervals of the thread's CPU
//! time, which spreads less than independent draws). The test allows `Z` = 4.5 standard
//! deviations, `Z * sqrt(p (1 - p) / n)` on the share: a correct profiler fails it with
//! probability below 1e-5. `go tool pprof -tagfocus tenant=…` counts the same samples.
//!
//! Why equal polls, 3 times as many: CPU timers are checked at the kernel's ticks, so where
//! a sample falls depends a little on the length of the burns around it (a sample due near
//! the end of a burn can be taken in the next one the worker runs, another task's). With
//! every burn alike, whatever that does is the same per burn for both tenants, and the
//! burns are 3:1 like the CPU time. (Burns of 15 ms against 5 ms gave `a` 0.77 to 0.79 of
//! the samples for 0.75 of the CPU, run after run.)
// tokio is not a dependency under `--cfg loom` (see Cargo.toml).
#![cfg(not(loom))]

mod common;
mod tenants;

use std::hint::black_box;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Arc;

use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// Standard deviations allowed (two-sided tail of the normal: 6.8e-6).
const Z: f64 = 4.5;
/// Profile rate, Hz (the kernel's tick: per-thread CPU timers fire no faster on a 250 Hz
/// kernel), and the CPU time of all burns: about 1,300 samples.
const HZ: u32 = 250;
const TOTAL_CPU_NS: i64 = 6_000_000_000;
const TASKS_PER_TENANT: usize = 3;
/// CPU time of one poll's burn: longer than the kernel's tick (4 ms at 250 Hz).
const BURN_NS: i64 = 5_000_000;
/// Polls of an `a` task per poll of a `b` task.
const A_TO_B: usize = 3;

#[inline(never)]
fn burn(iterations: u64) -> u64 {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..iterations {
        x = black_box(x.rotate_left(5) ^ i).wrapping_mul(0x2545_f491_4f6c_dd1d);
    }
    x
}

/// Iterations of `burn` that take `BURN_NS` of CPU on this machine and build.
fn calibrate() -> u64 {
    let mut n = 1u64 << 12;
    loop {
        let t = common::thread_cpu_nanos();
        black_box(burn(black_box(n)));
        let dt = common::thread_cpu_nanos() - t;
        if dt > 20 * BURN_NS {
            return (n as i128 * BURN_NS as i128 / dt as i128) as u64;
        }
        n *= 2;
    }
}

async fn tenant(iterations: u64, polls: usize, cpu: Arc<AtomicI64>) {
    for _ in 0..polls {
        let t = common::thread_cpu_nanos();
        black_box(burn(black_box(iterations)));
        cpu.fetch_add(common::thread_cpu_nanos() - t, Relaxed);
        tenants::hop().await;
    }
}

#[test]
fn cpu_samples_split_by_span() {
    let subscriber = tracing_subscriber::registry().with(heaprof::tracing::LabelLayer::default());
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let iterations = calibrate();
    // Polls of a `b` task so that all burns together take TOTAL_CPU_NS.
    let polls = (TOTAL_CPU_NS / BURN_NS) as usize / (A_TO_B + 1) / TASKS_PER_TENANT;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let cpu = [Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0))];

    heaprof::set_cpu_profile_rate(HZ);
    let out = common::SharedBuf::default();
    heaprof::start_cpu_profile(out.clone()).unwrap();
    let handles: Vec<_> = (0..TASKS_PER_TENANT)
        .flat_map(|_| [("a", A_TO_B * polls, 0), ("b", polls, 1)])
        .map(|(name, polls, i)| {
            let span = tracing::info_span!("burn_task", tenant = name);
            rt.spawn(tenant(iterations, polls, cpu[i].clone()).instrument(span))
        })
        .collect();
    for h in handles {
        rt.block_on(h).unwrap();
    }
    heaprof::stop_cpu_profile();
    drop(rt);

    let bytes = out.bytes();
    let p = common::decode(&bytes);
    let s = |i: i64| p.string_table[i as usize].as_str();
    let (mut a, mut b, mut other) = (0i64, 0i64, 0i64);
    for sample in &p.sample {
        if !common::stack_names(&p, sample)
            .iter()
            .any(|n| n.contains("burn"))
        {
            continue;
        }
        let tenant = sample.label.iter().find(|l| s(l.key) == "tenant");
        match tenant.map(|l| s(l.str)) {
            Some("a") => a += sample.value[0],
            Some("b") => b += sample.value[0],
            _ => other += sample.value[0],
        }
    }
    let n = (a + b) as f64;
    let share = a as f64 / n;
    let (cpu_a, cpu_b) = (cpu[0].load(Relaxed) as f64, cpu[1].load(Relaxed) as f64);
    let measured = cpu_a / (cpu_a + cpu_b);
    let bound = |p: f64| Z * (p * (1.0 - p) / n).sqrt();
    eprintln!(
        "samples in burn: a {a}, b {b} (ratio {:.2}), unlabelled {other}; share of a {share:.4}; \
         CPU time a {:.0} ms, b {:.0} ms, share {measured:.4}; bound ±{:.4}",
        a as f64 / b as f64,
        cpu_a / 1e6,
        cpu_b / 1e6,
        bound(0.75)
    );
    assert_eq!(other, 0, "every sample in burn carries a tenant");
    // Enough samples for the bound to mean something (±0.065 on the share at 900).
    assert!(n >= 900.0, "only {n} samples");
    assert!(
        (share - 0.75).abs() <= bound(0.75),
        "share of a {share:.4}, want 0.75 ± {:.4} (a {a}, b {b})",
        bound(0.75)
    );
    assert!(
        (share - measured).abs() <= bound(measured),
        "share of a {share:.4}, measured CPU share {measured:.4} ± {:.4}",
        bound(measured)
    );

    let f = common::write_scratch("tracing_cpu.pb.gz", &bytes);
    for (tenant, want) in [("a", a), ("b", b)] {
        let tagfocus = format!("-tagfocus=tenant={tenant}");
        let args = [
            "-top",
            "-sample_index=samples",
            "-nodecount=100000",
            "-nodefraction=0",
            "-focus=burn",
            &tagfocus,
            &f,
        ];
        if let Some(top) = common::go_pprof(&args) {
            assert_eq!(shown_count(&top), Some(want), "{args:?}:\n{top}");
        }
    }
}

/// The samples `go tool pprof -top -sample_index=samples` accounts for: `Showing nodes
/// accounting for 517, …`.
fn shown_count(top: &str) -> Option<i64> {
    let line = top
        .lines()
        .find(|l| l.contains("Showing nodes accounting for"))?;
    let v = line.split("accounting for ").nth(1)?.split(',').next()?;
    v.trim().parse().ok()
}
