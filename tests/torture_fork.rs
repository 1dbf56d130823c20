//! Fork torture: children forked while other threads sample allocations (stack capture,
//! unwinder cache leases, table probes), write heap profiles (symbolizer) and add to custom
//! profiles (shard locks) can allocate, write profiles and exit; fork + exec works too.
//! Every child runs under a timeout, and so does the whole case (`torture_util`).

mod common;
mod torture_util;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use torture_util::{fork_and_wait, run_case_ok, wait_pid};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const RUNNER: &str = "child_entry";

/// Allocates from a stack that depends on `depth`, so the stack table keeps growing.
#[inline(never)]
fn churn_deep(depth: usize, size: usize) -> Vec<u8> {
    if depth == 0 {
        return vec![depth as u8; size];
    }
    let v = churn_deep(depth - 1, size);
    black_box(&v);
    v
}

#[inline(never)]
#[allow(clippy::vec_box)] // the boxes are the allocations under test
fn fork_child_site(n: usize) -> Vec<Box<u64>> {
    black_box((0..n as u64).map(Box::new).collect())
}

/// What each forked child does: allocate, write the heap profile and a custom profile,
/// start a thread. Returns the exit code (0 = all fine).
fn child_work(custom: &heaprof::Profile) -> i32 {
    heaprof::set_heap_profile_rate(1);
    black_box(vec![0u8; 32 << 20]); // leave the countdown drawn at the parent's rate
    let kept = fork_child_site(2000);
    let mut out = Vec::new();
    if heaprof::write_heap_profile(&mut out).is_err() {
        return 2;
    }
    let p = common::decode(&out);
    let t = common::totals_by_site(&p, &["fork_child_site"]);
    // At rate 1: 2000 boxes of 8 bytes plus the Vec's 16000 bytes.
    let got = t.get("fork_child_site").map(|v| v[3]);
    if got != Some(2000 * 8 + 16_000) {
        eprintln!("child: fork_child_site in-use {got:?}");
        return 3;
    }
    if custom.try_add(u64::MAX, 0).is_err() {
        return 4;
    }
    let mut txt = Vec::new();
    if custom.write_to(&mut txt, 1).is_err() || !txt.starts_with(b"torture.fork profile") {
        return 5;
    }
    if std::thread::spawn(|| black_box(vec![1u8; 100]).len())
        .join()
        .ok()
        != Some(100)
    {
        return 7;
    }
    black_box(kept);
    0
}

fn fork_busy() {
    // Dense enough that the threads sample all the time, sparse enough that the writer's
    // profiles stay small (a debug build symbolizes slowly).
    heaprof::set_heap_profile_rate(4096);
    let stop = Arc::new(AtomicBool::new(false));
    let custom = heaprof::Profile::new("torture.fork");
    let writes = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..3usize {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                black_box(churn_deep((i + t) % 6, [8, 100, 3000][i % 3]));
                if i % 500 == 0 {
                    // Fresh threads: first capture allocates, first lease fills a cache.
                    std::thread::spawn(move || black_box(churn_deep(i % 5, 64)))
                        .join()
                        .unwrap();
                }
                i += 1;
            }
        }));
    }
    {
        let (stop, writes) = (stop.clone(), writes.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let mut out = Vec::new();
                heaprof::write_heap_profile(&mut out).unwrap();
                writes.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    {
        let (stop, custom) = (stop.clone(), custom.clone());
        threads.push(std::thread::spawn(move || {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                custom.add(k, 0);
                if k % 7 == 0 {
                    custom.write_to(std::io::sink(), 1).unwrap();
                }
                if k >= 50 {
                    custom.remove(&(k - 50));
                }
                k += 1;
            }
        }));
    }
    // Let every thread get going (the writer finishes a first profile) before forking.
    while writes.load(Ordering::Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 0..4 {
        let t0 = std::time::Instant::now();
        let status = fork_and_wait(Duration::from_secs(60), || child_work(&custom));
        assert_eq!(
            status,
            Some(0),
            "fork {i}: child status (None = deadlocked)"
        );
        eprintln!("fork {i}: child done in {:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(15));
    }
    // fork + exec, by hand and through std::process::Command.
    for i in 0..5 {
        let sh = c"/bin/sh";
        let args = [
            sh.as_ptr(),
            c"-c".as_ptr(),
            c"exit 7".as_ptr(),
            std::ptr::null(),
        ];
        // SAFETY: the child only calls execv (async-signal-safe) and _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: null-terminated argv of valid C strings.
            unsafe {
                libc::execv(sh.as_ptr(), args.as_ptr());
                libc::_exit(127);
            }
        }
        assert_eq!(
            wait_pid(pid, Duration::from_secs(60)),
            Some(7),
            "fork+exec {i}"
        );
        let st = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 7"])
            .status()
            .unwrap();
        assert_eq!(st.code(), Some(7), "Command {i}");
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn child_entry() {
    match torture_util::case().as_deref() {
        None => {}
        Some("fork_busy") => fork_busy(),
        Some(other) => panic!("unknown case {other}"),
    }
}

#[test]
fn fork_while_sampling_writing_and_tracking() {
    run_case_ok(RUNNER, "fork_busy", &[], Duration::from_secs(240));
}
