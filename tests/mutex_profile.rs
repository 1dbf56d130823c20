//! The `mutex` profile: the time waiters spent on a contended `heaprof::sync` lock is charged
//! to the stack that released it (not the waiter's), matching the waiting measured around the
//! calls; fraction R keeps 1 in R releases weighted by R; fraction 0 and uncontended locks
//! record nothing; Go's sample types and `--- mutex:` text; `go tool pprof` reads both.
//!
//! The tests change the process-wide fraction, so they run one at a time (`SERIAL`).

mod common;

use std::hint::black_box;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use heaprof::__private::proto;
use heaprof::sync::{Mutex, RwLock};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    let g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    heaprof::__private::reset_mutex_profile();
    g
}

fn mutex_profile() -> heaprof::Profile {
    heaprof::lookup("mutex").expect("predefined")
}

fn decoded() -> proto::Profile {
    let mut out = Vec::new();
    mutex_profile().write_to(&mut out, 0).unwrap();
    common::decode(&out)
}

/// (contentions, delay ns) of the samples whose leaf (after trimming) ends with `site`.
fn at_leaf(p: &proto::Profile, site: &str) -> (i64, i64) {
    let (mut c, mut d) = (0, 0);
    for s in &p.sample {
        if common::stack_names(p, s)[0].ends_with(site) {
            c += s.value[0];
            d += s.value[1];
        }
    }
    (c, d)
}

/// Whether any sample's stack mentions `site` at all.
fn mentions(p: &proto::Profile, site: &str) -> bool {
    p.sample
        .iter()
        .any(|s| common::stack_names(p, s).iter().any(|n| n.ends_with(site)))
}

const HOLD: Duration = Duration::from_millis(10);

/// The critical section whose end makes the waiter wait: takes the lock, says so, holds it.
#[inline(never)]
fn hold_then_release(m: &Mutex<u64>, locked: &mpsc::Sender<()>, hold: Duration) {
    let mut g = m.lock().unwrap();
    locked.send(()).unwrap();
    std::thread::sleep(hold);
    *g += 1;
    drop(black_box(g));
}

#[inline(never)]
fn waiter_site(m: &Mutex<u64>) {
    let mut g = black_box(m.lock().unwrap());
    *g += 1;
}

/// `rounds` times: the holder takes `m` and holds it `hold`; the waiter calls `waiter_site`
/// as soon as it is told. Returns the waiting time measured around those calls.
fn contend(rounds: usize, hold: Duration) -> Duration {
    let m = Arc::new(Mutex::new(0u64));
    let (locked_tx, locked_rx) = mpsc::channel();
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    let m2 = m.clone();
    let holder = std::thread::spawn(move || {
        for _ in 0..rounds {
            hold_then_release(&m2, &locked_tx, hold);
            ack_rx.recv().unwrap();
        }
    });
    let mut truth = Duration::ZERO;
    for _ in 0..rounds {
        locked_rx.recv().unwrap();
        let t0 = Instant::now();
        waiter_site(&m);
        truth += t0.elapsed();
        ack_tx.send(()).unwrap();
    }
    holder.join().unwrap();
    assert_eq!(*m.lock().unwrap(), 2 * rounds as u64);
    truth
}

#[test]
fn the_releaser_is_charged_with_the_waiting_it_ended() {
    let _s = serial();
    assert_eq!(heaprof::set_mutex_profile_fraction(1), 0);
    let truth = contend(20, HOLD);
    heaprof::set_mutex_profile_fraction(0);
    let p = decoded();
    let st = &p.string_table;
    let types: Vec<(&str, &str)> = p
        .sample_type
        .iter()
        .map(|t| (st[t.r#type as usize].as_str(), st[t.unit as usize].as_str()))
        .collect();
    assert_eq!(types, [("contentions", "count"), ("delay", "nanoseconds")]);
    let pt = p.period_type.as_ref().unwrap();
    assert_eq!(
        (
            st[pt.r#type as usize].as_str(),
            st[pt.unit as usize].as_str()
        ),
        ("contentions", "count")
    );
    assert_eq!(p.period, 1);
    let (count, delay) = at_leaf(&p, "hold_then_release");
    // Every round's waiter found the lock held, unless it was descheduled for a whole hold
    // (then nobody waited, and its measured time is ~0 as well).
    assert!((1..=20).contains(&count), "{count}");
    let err = (delay as f64 - truth.as_nanos() as f64).abs() / truth.as_nanos() as f64;
    assert!(
        err <= 0.20,
        "charged {delay} ns vs measured {} ns",
        truth.as_nanos()
    );
    assert!(!mentions(&p, "waiter_site"), "the waiter is not charged");
    assert_eq!(mutex_profile().count(), 1);
}

#[test]
fn fraction_r_keeps_one_in_r_weighted_by_r() {
    let _s = serial();
    heaprof::set_mutex_profile_fraction(4);
    let rounds = 200;
    contend(rounds, Duration::from_millis(1));
    let p = decoded();
    heaprof::set_mutex_profile_fraction(0);
    // The period is the fraction in force when the profile is written.
    assert_eq!(p.period, 4);
    let (count, _) = at_leaf(&p, "hold_then_release");
    assert_eq!(count % 4, 0, "{count}");
    // Binomial(200, 1/4) samples x 4: mean 200, standard deviation 24.5; 4 deviations.
    assert!((100..=300).contains(&count), "{count}");
}

#[inline(never)]
fn uncontended_site(m: &Mutex<u64>) {
    for _ in 0..1000 {
        *m.lock().unwrap() += 1;
    }
}

#[test]
fn fraction_zero_and_uncontended_locks_record_nothing() {
    let _s = serial();
    heaprof::set_mutex_profile_fraction(0);
    contend(5, HOLD);
    heaprof::set_mutex_profile_fraction(1);
    uncontended_site(&Mutex::new(0));
    heaprof::set_mutex_profile_fraction(0);
    assert!(decoded().sample.is_empty());
    assert_eq!(mutex_profile().count(), 0);
}

#[inline(never)]
fn write_then_release(l: &RwLock<u32>, locked: &mpsc::Sender<()>) {
    let mut g = l.write().unwrap();
    locked.send(()).unwrap();
    std::thread::sleep(HOLD);
    *g += 1;
}

#[test]
fn a_writer_is_charged_with_the_readers_it_blocked() {
    let _s = serial();
    heaprof::set_mutex_profile_fraction(1);
    for _ in 0..5 {
        let l = Arc::new(RwLock::new(0));
        let (tx, rx) = mpsc::channel();
        let l2 = l.clone();
        let writer = std::thread::spawn(move || write_then_release(&l2, &tx));
        rx.recv().unwrap();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || *l.read().unwrap())
            })
            .collect();
        writer.join().unwrap();
        for r in readers {
            assert_eq!(r.join().unwrap(), 1);
        }
    }
    heaprof::set_mutex_profile_fraction(0);
    let (count, delay) = at_leaf(&decoded(), "write_then_release");
    assert!((1..=5).contains(&count), "{count}");
    assert!(delay > 0);
}

#[test]
fn gos_mutex_text_and_go_tool_pprof_read_it() {
    let _s = serial();
    heaprof::set_mutex_profile_fraction(2);
    contend(10, HOLD);
    let mut text = Vec::new();
    mutex_profile().write_to(&mut text, 1).unwrap();
    let mut pb = Vec::new();
    mutex_profile().write_to(&mut pb, 0).unwrap();
    heaprof::set_mutex_profile_fraction(0);
    let text = String::from_utf8(text).unwrap();
    assert!(
        text.starts_with("--- mutex:\ncycles/second=1000000000\nsampling period=2\n"),
        "{text}"
    );
    let p = common::decode(&pb);
    let (count, delay) = at_leaf(&p, "hold_then_release");
    // The text holds the raw samples: its readers multiply them by the sampling period.
    let raw: (i64, i64) = text
        .lines()
        .filter(|l| l.contains(" @ "))
        .map(|l| {
            let mut it = l.split_whitespace();
            let d: i64 = it.next().unwrap().parse().unwrap();
            let c: i64 = it.next().unwrap().parse().unwrap();
            (c, d)
        })
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!((raw.0 * 2, raw.1 * 2), (count, delay));
    let tf = common::write_scratch("mutex.txt", text.as_bytes());
    if let Some(out) = common::go_pprof(&["-raw", &tf]) {
        assert!(out.contains("contentions/count delay/nanoseconds"), "{out}");
    }
    let pf = common::write_scratch("mutex.pb.gz", &pb);
    if let Some(top) = common::go_pprof(&["-top", "-sample_index=delay", &pf]) {
        assert!(top.contains("Type: delay"), "{top}");
        assert!(top.contains("hold_then_release"), "{top}");
    }
}

#[test]
fn listed_and_found_like_the_other_profiles() {
    let names: Vec<String> = heaprof::profiles()
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "mutex"), "{names:?}");
    assert_eq!(mutex_profile().name(), "mutex");
}
