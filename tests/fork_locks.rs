//! The fork protocol (`src/lock_order.rs`): a child forked while another thread holds any
//! lock or flag of the list completes every operation — allocate and write `heap` and
//! `heap_peak`, intern and write labels, add to and write a custom profile, record and write
//! `block`, capture and write `threads`, find no CPU profile running and run one of its own,
//! read the dump counters, serve `/debug/pprof/` — within a timeout (a hang is killed and
//! fails the test). Plus the reproductions without test hooks: a CPU profile running
//! at the fork, and forks while threads use labels, `heaprof::sync` locks with the block
//! profile on, `threads` writes and a CPU profile.
//!
//! Each case runs in a child process of its own (`torture_util`), started with sampling off
//! so that the case decides when the tables are created.

mod common;
mod torture_util;

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::SharedBuf;
use torture_util::{fork_and_wait, run_case_ok};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const RUNNER: &str = "child_entry";
const CASE_TIMEOUT: Duration = Duration::from_secs(300);
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the holding thread keeps an entry after the fork began: a lock is then still
/// held when the prepare handler asks for it (which waits), a flag when the child starts.
const HOLD: Duration = Duration::from_millis(300);
const START_ENV: &[(&str, &str)] = &[("HEAPROF_RATE", "0")];

/// Fails the child with `code` (its exit status) and a line on stderr.
macro_rules! check {
    ($cond:expr, $code:expr, $($msg:tt)*) => {
        if !$cond {
            eprintln!("child step {}: {}", $code, format!($($msg)*));
            return $code;
        }
    };
}

#[inline(never)]
#[allow(clippy::vec_box)] // the boxes are the allocations under test
fn child_site() -> Vec<Box<[u8; 100]>> {
    black_box((0..50).map(|_| Box::new([3u8; 100])).collect())
}

#[inline(never)]
fn peak_site(bytes: usize) -> Vec<u8> {
    black_box(vec![5u8; bytes])
}

#[inline(never)]
fn labeled_site() -> Vec<u8> {
    black_box(vec![4u8; 3000])
}

#[inline(never)]
fn parked_in_child(started: &AtomicBool, stop: &AtomicBool) {
    started.store(true, Ordering::Release);
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(Duration::from_millis(5));
    }
}

fn write(name: &str, debug: u8) -> Vec<u8> {
    let mut out = Vec::new();
    heaprof::lookup(name)
        .unwrap()
        .write_to(&mut out, debug)
        .unwrap();
    out
}

fn has_label(p: &heaprof::__private::proto::Profile, key: &str, value: &str) -> bool {
    p.sample.iter().any(|s| {
        s.label.iter().any(|l| {
            p.string_table[l.key as usize] == key && p.string_table[l.str as usize] == value
        })
    })
}

/// What every child does. Returns 0, or the number of the step that failed.
fn child_ops() -> i32 {
    heaprof::set_heap_profile_rate(1);
    // A sampled block over 80 KiB: placed in the large-block region (its lock).
    std::hint::black_box(vec![1u8; 200_000]);
    let kept = child_site();
    let heap = common::decode(&write("heap", 0));
    let t = common::totals_by_site(&heap, &["child_site"]);
    let inuse = t.get("child_site").map(|v| (v[2], v[3]));
    check!(
        inuse == Some((51, 50 * 100 + 50 * 8)),
        1,
        "heap in use {inuse:?}"
    );
    // Lift in-use well above the peak recorded so far (the parent's, in the busy case).
    let (peak, now) = peak_and_now();
    let need = peak.saturating_sub(now) + peak / 32 + (64 << 10);
    check!(need < 1 << 30, 2, "the parent's peak is too large: {peak}");
    let lift = peak_site(need as usize);
    let at_peak = common::totals_by_site(&common::decode(&write("heap_peak", 0)), &["peak_site"]);
    check!(at_peak.contains_key("peak_site"), 2, "heap_peak frozen");

    let labeled = heaprof::with_labels(&[("forklocks", "child")], labeled_site);
    let heap = common::decode(&write("heap", 0));
    check!(
        has_label(&heap, "forklocks", "child"),
        3,
        "no labeled sample"
    );

    let custom = heaprof::Profile::new("forklocks.child");
    custom.add(7u32, 0);
    let text = String::from_utf8(write("forklocks.child", 1)).unwrap();
    check!(
        text.starts_with("forklocks.child profile: total 1\n"),
        4,
        "{text}"
    );

    heaprof::set_block_profile_rate(1);
    let pair = (heaprof::sync::Mutex::new(()), heaprof::sync::Condvar::new());
    let g = pair.0.lock().unwrap();
    drop(pair.1.wait_timeout(g, Duration::from_millis(1)).unwrap());
    heaprof::set_block_profile_rate(0);
    check!(
        heaprof::lookup("block").unwrap().count() >= 1,
        5,
        "no block record"
    );
    common::decode(&write("block", 0));

    // A contended `heaprof::sync::Mutex`: the release that kept a waiter waiting is recorded.
    // On a loaded machine the waiter may not reach the lock before the release: then there
    // was no contention to record, and the round is tried again with a longer hold.
    heaprof::set_mutex_profile_fraction(1);
    for round in 1..=10u64 {
        let m = Arc::new(heaprof::sync::Mutex::new(0u32));
        let held = m.lock().unwrap();
        let waiter = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || *m.lock().unwrap() += 1)
        };
        std::thread::sleep(Duration::from_millis(20 * round));
        drop(held);
        waiter.join().unwrap();
        if heaprof::lookup("mutex").unwrap().count() >= 1 {
            break;
        }
    }
    heaprof::set_mutex_profile_fraction(0);
    check!(
        heaprof::lookup("mutex").unwrap().count() >= 1,
        5,
        "no mutex record"
    );
    common::decode(&write("mutex", 0));

    let (started, stop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let parked = {
        let (started, stop) = (started.clone(), stop.clone());
        std::thread::spawn(move || parked_in_child(&started, &stop))
    };
    // Running its own code: past the start, where a new thread still blocks every signal.
    while !started.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    let threads = String::from_utf8(write("threads", 2)).unwrap();
    stop.store(true, Ordering::Relaxed);
    parked.join().unwrap();
    check!(
        threads.contains("parked_in_child") && !threads.contains("thread_did_not_answer"),
        6,
        "{threads}"
    );

    check!(
        heaprof::stop_cpu_profile_result().is_none(),
        7,
        "a CPU profile runs in the child"
    );
    let buf = SharedBuf::default();
    check!(
        heaprof::start_cpu_profile(buf.clone()).is_ok(),
        8,
        "cannot start a CPU profile"
    );
    let t0 = common::thread_cpu_nanos();
    let mut x = 1u64;
    while common::thread_cpu_nanos() - t0 < 300_000_000 {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
    let stopped = heaprof::stop_cpu_profile_result();
    check!(matches!(stopped, Some(Ok(()))), 9, "stop: {stopped:?}");
    let cpu = common::decode(&buf.bytes());
    let samples: i64 = cpu.sample.iter().map(|s| s.value[0]).sum();
    check!(samples > 0, 10, "no CPU samples in 300 ms of CPU time");

    let _ = heaprof::dump_stats();

    let server = heaprof::http::serve("127.0.0.1:0").unwrap();
    let status = http_status(server.local_addr(), "/debug/pprof/");
    server.stop();
    check!(status.starts_with("HTTP/1.1 200"), 11, "{status}");
    black_box((kept, labeled, lift));
    0
}

/// The recorded peak and the in-use estimate now, from `heap_peak`'s comment.
fn peak_and_now() -> (u64, u64) {
    let p = common::decode(&write("heap_peak", 0));
    let c = p
        .comment
        .iter()
        .map(|&i| p.string_table[i as usize].as_str())
        .find(|c| c.starts_with("heaprof.heap_peak: "))
        .expect("heap_peak comment");
    let peak = c.split_whitespace().nth(1).unwrap().parse().unwrap();
    let now: i64 = c
        .split("(now ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    (peak, now.max(0) as u64)
}

/// The status line of a GET of `path`.
fn http_status(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    text.lines().next().unwrap_or("").to_string()
}

/// Forks while `entry` is held by another thread; the child runs [`child_ops`].
fn fork_while_held(entry: &str) {
    // State some entries need: a custom profile (its shards), a ring (a CPU profile ran).
    let _parents = heaprof::Profile::new("forklocks.parent");
    if entry == "cpu::RING" {
        let buf = SharedBuf::default();
        heaprof::start_cpu_profile(buf).unwrap();
        heaprof::stop_cpu_profile();
    }
    heaprof::__private::fork_hold(entry, HOLD).unwrap();
    let code = fork_and_wait(CHILD_TIMEOUT, child_ops);
    assert_eq!(
        code,
        Some(0),
        "{entry}: the child failed (step number; 101: a panic; None: a hang)"
    );
}

macro_rules! fork_while_held {
    ($($test:ident => $entry:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run_case_ok(RUNNER, concat!("held:", $entry), START_ENV, CASE_TIMEOUT);
            }
        )*
        /// The entries tested here.
        const HELD: &[&str] = &[$($entry),*];
    };
}

fork_while_held! {
    cpu_session => "cpu::SESSION",
    dump_installed => "dump::INSTALLED",
    threads_capture_round => "threads::capture::ROUND (and INSTALL)",
    custom_registry_and_shards => "custom::CUSTOM, then each custom::Shard",
    block_records => "block::RECORDS",
    labels_registry => "labels::REGISTRY",
    symbolizer => "symbolize::SYM_OWNER (and SYM_TAKEN_FOR_FORK)",
    tables_creation => "tables::TABLES",
    peak_snapshot => "peak::SNAPSHOTTING",
    threads_capture_slots => "threads::capture::SLOT",
    cpu_handler_in_flight => "cpu::{ACTIVE, RUNNING, ITIMER_MODE, IN_HANDLER}",
    cpu_ring_slot_claimed => "cpu::RING",
    cpu_stack_snapshot_refresh => "cpu::stacks::SEQ",
    mutex_records => "mutex::RECORDS (and waiters::GENERATION)",
    large_region => "large_region::LOCK",
}

/// Entries whose fork test is elsewhere, and why.
const ELSEWHERE: &[(&str, &str)] = &[
    (
        "env::TAKEN",
        "once::tests::child_forked_during_init_can_initialise (a ForkOnce; here the snapshot was taken before main)",
    ),
    (
        "threadcreate::STACKS",
        "once::tests::child_forked_during_init_can_initialise (a ForkOnce; here created by the first thread)",
    ),
    (
        "unwind::cache_pool::POOL (busy), unwind::modules::BUILDING",
        "cache_pool::tests::child_gets_back_slots_leased_by_vanished_threads, modules::tests::child_forked_while_the_list_is_built_can_rebuild_it",
    ),
    (
        "arena::GROWING",
        "arena::tests::child_forked_while_another_thread_grows_can_grow",
    ),
];

#[test]
fn every_entry_of_the_list_has_a_fork_test() {
    for name in heaprof::__private::fork_protocol() {
        assert!(
            HELD.contains(&name) || ELSEWHERE.iter().any(|(n, _)| *n == name),
            "{name} is in the fork protocol but has no fork test"
        );
    }
}

/// A CPU profile runs (into a file) when the process forks: in the child no profile runs
/// (stopping is a no-op: no panic, nothing written to the parent's file) and a new one can
/// start; the parent's file holds exactly one profile when the parent stops.
fn cpu_profile_at_fork() {
    let path = common::scratch("forklocks-cpu.pb.gz");
    let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    heaprof::start_cpu_profile(file).unwrap();
    let code = fork_and_wait(CHILD_TIMEOUT, || {
        heaprof::stop_cpu_profile();
        child_ops()
    });
    assert_eq!(
        code,
        Some(0),
        "the child failed (101: a panic; None: a hang)"
    );
    heaprof::stop_cpu_profile();
    let bytes = std::fs::read(&path).unwrap();
    let mut one = flate2::read::GzDecoder::new(&bytes[..]);
    let mut raw = Vec::new();
    one.read_to_end(&mut raw).unwrap();
    let rest = one.into_inner();
    assert!(rest.is_empty(), "{} bytes after the profile", rest.len());
    common::decode(&bytes);
}

#[test]
fn cpu_profile_running_at_fork() {
    run_case_ok(RUNNER, "cpu_at_fork", START_ENV, CASE_TIMEOUT);
}

#[inline(never)]
fn busy_labels(stop: &AtomicBool) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let v = (i % 64).to_string(); // interned (under the registry lock) every time
        black_box(heaprof::with_labels(&[("busy", &v)], || vec![0u8; 64]));
        i += 1;
    }
}

#[inline(never)]
fn busy_block(stop: &AtomicBool) {
    let pair = (
        heaprof::sync::Mutex::new(0u64),
        heaprof::sync::Condvar::new(),
    );
    while !stop.load(Ordering::Relaxed) {
        let g = pair.0.lock().unwrap();
        drop(pair.1.wait_timeout(g, Duration::from_micros(50)).unwrap());
    }
}

#[inline(never)]
fn busy_threads(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        black_box(write("threads", 0));
    }
}

/// The reproductions, no test hooks: forks while other threads intern labels,
/// record block events, write `threads`, and a CPU profile runs.
fn busy() {
    heaprof::set_heap_profile_rate(4096);
    heaprof::set_block_profile_rate(1);
    let cpu = SharedBuf::default();
    heaprof::start_cpu_profile(cpu.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = [busy_labels, busy_block, busy_threads]
        .into_iter()
        .map(|f| {
            let stop = stop.clone();
            std::thread::spawn(move || f(&stop))
        })
        .collect();
    for round in 0..4 {
        std::thread::sleep(Duration::from_millis(100));
        let code = fork_and_wait(CHILD_TIMEOUT, child_ops);
        assert_eq!(
            code,
            Some(0),
            "fork {round}: the child failed (None: a hang)"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    assert!(matches!(heaprof::stop_cpu_profile_result(), Some(Ok(()))));
    common::decode(&cpu.bytes());
}

#[test]
fn fork_while_labels_block_threads_and_cpu_are_busy() {
    run_case_ok(RUNNER, "busy", START_ENV, CASE_TIMEOUT);
}

#[test]
fn child_entry() {
    let Some(case) = torture_util::case() else {
        return;
    };
    match case.as_str() {
        "cpu_at_fork" => cpu_profile_at_fork(),
        "busy" => busy(),
        c => match c.strip_prefix("held:") {
            Some(entry) => fork_while_held(entry),
            None => panic!("unknown case {c}"),
        },
    }
}
