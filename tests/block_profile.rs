//! The `block` profile: contended `heaprof::sync` waits are recorded with the waiting stack
//! and a delay that matches the truth measured around the call; condvar and rwlock waits;
//! rate 0 and uncontended locks record nothing; a rate below the event length keeps every
//! event at face value; Go's contention text; `go tool pprof` reads debug 0 and 1.
//!
//! The tests change the process-wide rate, so they run one at a time (`SERIAL`).

mod common;

use std::hint::black_box;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use heaprof::__private::proto;
use heaprof::sync::{Condvar, Mutex, RwLock};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const HOLD: Duration = Duration::from_millis(20);

fn block() -> heaprof::Profile {
    heaprof::lookup("block").expect("predefined")
}

fn decoded() -> proto::Profile {
    let mut out = Vec::new();
    block().write_to(&mut out, 0).unwrap();
    common::decode(&out)
}

/// (contentions, delay ns) of the samples whose stack contains a function ending in `site`,
/// and whether each such sample's leaf frame (after trimming) is `site`.
fn totals(p: &proto::Profile, site: &str) -> (i64, i64, bool) {
    let (mut c, mut d, mut leaf) = (0, 0, true);
    for s in &p.sample {
        let names = common::stack_names(p, s);
        if names.iter().any(|n| n.ends_with(site)) {
            c += s.value[0];
            d += s.value[1];
            leaf &= names[0].ends_with(site);
        }
    }
    (c, d, leaf)
}

fn assert_close(recorded_ns: i64, truth: Duration, what: &str) {
    let truth = truth.as_nanos() as f64;
    let err = (recorded_ns as f64 - truth).abs() / truth;
    assert!(
        err <= 0.20,
        "{what}: recorded {recorded_ns} ns vs measured {truth} ns ({:.1}% off)",
        err * 100.0
    );
}

#[inline(never)]
fn wait_for_lock(m: &Mutex<u64>) -> heaprof::sync::MutexGuard<'_, u64> {
    black_box(m.lock().unwrap())
}

/// `rounds` times: a holder takes `m`, tells the waiter, sleeps `HOLD`, releases; the waiter
/// calls `wait` as soon as told. Returns the measured time inside `wait` calls and how many
/// of them found the lock held (so the profile should have them).
fn contend(rounds: usize, wait: fn(&Mutex<u64>) -> heaprof::sync::MutexGuard<'_, u64>) -> Duration {
    let m = Arc::new(Mutex::new(0u64));
    let (locked_tx, locked_rx) = mpsc::channel();
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    let m2 = m.clone();
    let holder = std::thread::spawn(move || {
        for _ in 0..rounds {
            let g = m2.try_lock().expect("the waiter released it");
            locked_tx.send(()).unwrap();
            std::thread::sleep(HOLD);
            drop(g);
            ack_rx.recv().unwrap();
        }
    });
    let mut truth = Duration::ZERO;
    for _ in 0..rounds {
        locked_rx.recv().unwrap();
        let t0 = Instant::now();
        let mut g = wait(&m);
        truth += t0.elapsed();
        *g += 1;
        drop(g);
        ack_tx.send(()).unwrap();
    }
    holder.join().unwrap();
    assert_eq!(*m.lock().unwrap(), rounds as u64);
    truth
}

#[test]
fn mutex_contention_delay_matches_measured_truth() {
    let _s = serial();
    heaprof::set_block_profile_rate(1);
    let truth = contend(25, wait_for_lock);
    heaprof::set_block_profile_rate(0);
    let p = decoded();
    let st = &p.string_table;
    assert_eq!(st[p.sample_type[0].r#type as usize], "contentions");
    assert_eq!(st[p.sample_type[0].unit as usize], "count");
    assert_eq!(st[p.sample_type[1].r#type as usize], "delay");
    assert_eq!(st[p.sample_type[1].unit as usize], "nanoseconds");
    let pt = p.period_type.as_ref().unwrap();
    assert_eq!(st[pt.r#type as usize], "contentions");
    assert_eq!(p.period, 1);
    let (count, delay, leaf) = totals(&p, "wait_for_lock");
    // Each of the 25 waits found the lock held unless the waiter was descheduled for a
    // whole hold (then it was not a contention, and its measured time is ~0 as well).
    assert!((1..=25).contains(&count), "{count}");
    assert!(leaf, "heaprof's frames are trimmed from the top");
    assert_close(delay, truth, "mutex");
}

#[inline(never)]
fn wait_for_flag(pair: &(Mutex<bool>, Condvar)) {
    let g = pair.1.wait_while(pair.0.lock().unwrap(), |f| !*f).unwrap();
    black_box(&g);
}

#[test]
fn condvar_waits_count_as_blocking() {
    let _s = serial();
    heaprof::set_block_profile_rate(1);
    let mut truth = Duration::ZERO;
    for _ in 0..10 {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let p2 = pair.clone();
        let notifier = std::thread::spawn(move || {
            std::thread::sleep(HOLD);
            *p2.0.lock().unwrap() = true;
            p2.1.notify_all();
        });
        let t0 = Instant::now();
        wait_for_flag(&pair);
        truth += t0.elapsed();
        notifier.join().unwrap();
    }
    heaprof::set_block_profile_rate(0);
    let (count, delay, _) = totals(&decoded(), "wait_for_flag");
    assert!((1..=10).contains(&count), "{count}");
    assert_close(delay, truth, "condvar");
}

#[inline(never)]
fn read_blocked(l: &RwLock<u32>) -> u32 {
    *l.read().unwrap()
}

#[test]
fn rwlock_readers_blocked_by_a_writer_are_recorded() {
    let _s = serial();
    heaprof::set_block_profile_rate(1);
    let mut truth = Duration::ZERO;
    for i in 0..10 {
        let l = Arc::new(RwLock::new(i));
        let (tx, rx) = mpsc::channel();
        let l2 = l.clone();
        let writer = std::thread::spawn(move || {
            let mut g = l2.write().unwrap();
            tx.send(()).unwrap();
            std::thread::sleep(HOLD);
            *g += 1;
        });
        rx.recv().unwrap();
        let t0 = Instant::now();
        assert_eq!(read_blocked(&l), i + 1);
        truth += t0.elapsed();
        writer.join().unwrap();
    }
    heaprof::set_block_profile_rate(0);
    let (count, delay, _) = totals(&decoded(), "read_blocked");
    assert!((1..=10).contains(&count), "{count}");
    assert_close(delay, truth, "rwlock");
}

#[inline(never)]
fn wait_at_rate_zero(m: &Mutex<u64>) -> heaprof::sync::MutexGuard<'_, u64> {
    black_box(m.lock().unwrap())
}

#[inline(never)]
fn uncontended_site(m: &Mutex<u64>) {
    for _ in 0..1000 {
        *m.lock().unwrap() += 1;
    }
}

#[test]
fn rate_zero_and_uncontended_locks_record_nothing() {
    let _s = serial();
    heaprof::set_block_profile_rate(0);
    contend(5, wait_at_rate_zero);
    heaprof::set_block_profile_rate(1);
    uncontended_site(&Mutex::new(0));
    heaprof::set_block_profile_rate(0);
    let p = decoded();
    assert_eq!(totals(&p, "wait_at_rate_zero").0, 0);
    assert_eq!(totals(&p, "uncontended_site").0, 0);
}

#[inline(never)]
fn wait_at_5ms_rate(m: &Mutex<u64>) -> heaprof::sync::MutexGuard<'_, u64> {
    black_box(m.lock().unwrap())
}

#[test]
fn events_longer_than_the_rate_are_kept_at_face_value() {
    let _s = serial();
    // 20 ms holds at a 5 ms rate: every contended wait lasts ≥ ~20 ms ≥ rate, so each is
    // kept with count 1 and its own delay (events shorter than the rate are the sampled case,
    // unit-tested with a fixed random source in src/profiles/block/mod.rs).
    heaprof::set_block_profile_rate(5_000_000);
    let truth = contend(10, wait_at_5ms_rate);
    heaprof::set_block_profile_rate(0);
    let (count, delay, _) = totals(&decoded(), "wait_at_5ms_rate");
    assert!((1..=10).contains(&count), "{count}");
    assert_close(delay, truth, "rate 5 ms");
}

#[inline(never)]
fn wait_for_interop(m: &Mutex<u64>) -> heaprof::sync::MutexGuard<'_, u64> {
    black_box(m.lock().unwrap())
}

#[test]
fn go_contention_text_and_go_tool_pprof() {
    let _s = serial();
    heaprof::set_block_profile_rate(1);
    contend(3, wait_for_interop);
    heaprof::set_block_profile_rate(0);
    let mut pb = Vec::new();
    block().write_to(&mut pb, 0).unwrap();
    let mut txt = Vec::new();
    block().write_to(&mut txt, 1).unwrap();
    let text = String::from_utf8(txt.clone()).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("--- contention:"));
    assert_eq!(lines.next(), Some("cycles/second=1000000000"));
    let mut samples = 0;
    for l in lines.take_while(|l| !l.starts_with("---")) {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let (vals, addrs) = l.split_once(" @").unwrap_or_else(|| panic!("{l:?}"));
        let v: Vec<u64> = vals.split(' ').map(|x| x.parse().unwrap()).collect();
        assert_eq!(v.len(), 2, "{l:?}");
        assert!(
            addrs.split(' ').skip(1).all(|a| a.starts_with("0x")),
            "{l:?}"
        );
        samples += 1;
    }
    assert!(samples >= 1);
    assert!(text.contains("wait_for_interop"), "{text}");
    assert!(text.contains("--- Memory map: ---"));

    let f0 = common::write_scratch("block.pb.gz", &pb);
    let f1 = common::write_scratch("block.txt", &txt);
    let Some(raw) = common::go_pprof(&["-raw", &f0]) else {
        return;
    };
    assert!(raw.contains("contentions/count delay/nanoseconds"), "{raw}");
    assert!(raw.contains("wait_for_interop"), "{raw}");
    let exe = std::env::current_exe().unwrap();
    let raw = common::go_pprof(&["-raw", exe.to_str().unwrap(), &f1]).unwrap();
    assert!(raw.contains("wait_for_interop"), "{raw}");
    assert!(raw.contains("contentions/count delay/nanoseconds"), "{raw}");
}
