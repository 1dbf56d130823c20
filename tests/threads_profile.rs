//! The `threads` profile (alias `goroutine`): threads parked in a condvar wait, a sleep and a
//! busy loop appear with their own functions on the stack and their names as labels; a
//! thread that blocks every signal does not hang the writer and is reported; the panic-style
//! dump and `go tool pprof` on debug 0 and 1.

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use heaprof::__private::proto;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

fn threads() -> heaprof::Profile {
    heaprof::lookup("threads").expect("predefined")
}

/// Parked threads that stop when dropped.
struct Parked {
    stop: Arc<AtomicBool>,
    cv: Arc<(Mutex<bool>, Condvar)>,
    handles: Vec<JoinHandle<()>>,
    tids: Vec<(String, i32)>,
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        *self.cv.0.lock().unwrap() = true;
        self.cv.1.notify_all();
        for h in self.handles.drain(..) {
            h.join().unwrap();
        }
    }
}

/// Parking functions count themselves in `inside` on entry: from then on they are on their
/// thread's stack, which is what the tests look for.
#[inline(never)]
fn park_in_condvar(cv: &(Mutex<bool>, Condvar), inside: &AtomicUsize) {
    inside.fetch_add(1, Ordering::SeqCst);
    let mut g = cv.0.lock().unwrap();
    while !*g {
        g = cv.1.wait(g).unwrap();
    }
    black_box(&g);
}

#[inline(never)]
fn park_in_sleep(stop: &AtomicBool, inside: &AtomicUsize) {
    inside.fetch_add(1, Ordering::SeqCst);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    black_box(stop);
}

#[inline(never)]
fn spin_busy(stop: &AtomicBool, inside: &AtomicUsize) -> u64 {
    inside.fetch_add(1, Ordering::SeqCst);
    let mut x = 1u64;
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..1000 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    x
}

/// Blocks every signal, waits until `unmask` (then unblocks, waits for `stop`).
#[inline(never)]
fn park_with_signals_blocked(stop: &AtomicBool, unmask: &AtomicBool, masked: mpsc::Sender<()>) {
    // SAFETY: a full signal set applied to this thread only; restored below.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        assert_eq!(
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut()),
            0
        );
    }
    masked.send(()).unwrap();
    while !unmask.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: as above.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &all, std::ptr::null_mut());
    }
    park_in_sleep(stop, &AtomicUsize::new(0));
}

fn spawn(
    name: &str,
    tids: &mpsc::Sender<(String, i32)>,
    f: impl FnOnce() + Send + 'static,
) -> JoinHandle<()> {
    let tx = tids.clone();
    let n = name.to_string();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send((n, unsafe { libc::gettid() })).unwrap();
            f()
        })
        .unwrap()
}

/// Starts the condvar, sleep and busy threads (names prefixed with `tag`).
fn park_three(tag: &str) -> Parked {
    let stop = Arc::new(AtomicBool::new(false));
    let cv = Arc::new((Mutex::new(false), Condvar::new()));
    let (tx, rx) = mpsc::channel();
    let mut handles = Vec::new();
    let inside = Arc::new(AtomicUsize::new(0));
    let (c, i) = (cv.clone(), inside.clone());
    handles.push(spawn(&format!("{tag}-cv"), &tx, move || {
        park_in_condvar(&c, &i)
    }));
    let (s, i) = (stop.clone(), inside.clone());
    handles.push(spawn(&format!("{tag}-sleep"), &tx, move || {
        park_in_sleep(&s, &i)
    }));
    let (s, i) = (stop.clone(), inside.clone());
    handles.push(spawn(&format!("{tag}-busy"), &tx, move || {
        black_box(spin_busy(&s, &i));
    }));
    let tids = (0..3).map(|_| rx.recv().unwrap()).collect();
    // Wait until each is in its parking function (a fixed sleep was too short on a loaded
    // machine), then a little longer so the condvar and sleep threads are blocked.
    let t0 = std::time::Instant::now();
    while inside.load(Ordering::SeqCst) < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "threads never parked"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    Parked {
        stop,
        cv,
        handles,
        tids,
    }
}

fn label<'a>(p: &'a proto::Profile, s: &proto::Sample, key: &str) -> Option<&'a str> {
    s.label
        .iter()
        .find(|l| p.string_table[l.key as usize] == key)
        .map(|l| p.string_table[l.str as usize].as_str())
}

/// The stack names of the sample labelled `thread = name`.
fn stack_of(p: &proto::Profile, name: &str) -> Vec<String> {
    let s = p
        .sample
        .iter()
        .find(|s| label(p, s, "thread") == Some(name))
        .unwrap_or_else(|| panic!("no sample for thread {name}"));
    common::stack_names(p, s)
}

fn has(names: &[String], f: &str) -> bool {
    names.iter().any(|n| n.ends_with(f))
}

#[test]
fn parked_threads_appear_in_their_functions() {
    let parked = park_three("pk");
    let mut out = Vec::new();
    threads().write_to(&mut out, 0).unwrap();
    let p = common::decode(&out);
    let st = &p.string_table;
    assert_eq!(st[p.sample_type[0].r#type as usize], "threads");
    assert_eq!(st[p.sample_type[0].unit as usize], "count");
    assert_eq!(p.period, 1);
    for (suffix, f) in [
        ("cv", "park_in_condvar"),
        ("sleep", "park_in_sleep"),
        ("busy", "spin_busy"),
    ] {
        let names = stack_of(&p, &format!("pk-{suffix}"));
        assert!(has(&names, f), "pk-{suffix}: {names:?}");
    }
    // The writing thread is in the profile too, from the test function down, without
    // heaprof's machinery on top.
    let mine = p
        .sample
        .iter()
        .map(|s| common::stack_names(&p, s))
        .find(|n| has(n, "parked_threads_appear_in_their_functions"))
        .expect("the writing thread's stack");
    assert!(!mine[0].starts_with("heaprof::"), "{mine:?}");
    let total: i64 = p.sample.iter().map(|s| s.value[0]).sum();
    assert!(total >= 5, "{total}");
    assert!(threads().count() >= 5);
    drop(parked);
}

#[test]
fn goroutine_is_an_alias_not_listed_twice() {
    assert_eq!(heaprof::lookup("goroutine").unwrap().name(), "threads");
    let names: Vec<String> = heaprof::profiles()
        .iter()
        .map(|p| p.name().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "threads"));
    assert!(!names.iter().any(|n| n == "goroutine"));
    assert!(matches!(
        heaprof::Profile::try_new("goroutine"),
        Err(heaprof::Error::DuplicateProfile(_))
    ));
    // Written through Go's name, the profile carries Go's names (how scrapers recognise it).
    let goroutine = heaprof::lookup("goroutine").unwrap();
    let mut pb = Vec::new();
    goroutine.write_to(&mut pb, 0).unwrap();
    let p = common::decode(&pb);
    assert_eq!(common::sample_type(&p, 0), "goroutine");
    let mut txt = Vec::new();
    goroutine.write_to(&mut txt, 1).unwrap();
    assert!(txt.starts_with(b"goroutine profile: total "));
}

#[test]
fn masked_thread_is_reported_and_answers_once_unmasked() {
    let stop = Arc::new(AtomicBool::new(false));
    let unmask = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let (mtx, mrx) = mpsc::channel();
    let (s, u) = (stop.clone(), unmask.clone());
    let h = spawn("masked", &tx, move || {
        park_with_signals_blocked(&s, &u, mtx)
    });
    let (_, tid) = rx.recv().unwrap();
    mrx.recv().unwrap();

    // Seen blocked up front: reported without waiting for it.
    let mut out = Vec::new();
    threads().write_to(&mut out, 0).unwrap();
    let p = common::decode(&out);
    assert!(has(&stack_of(&p, "masked"), "thread_blocks_signal"));
    let comments: Vec<&str> = p
        .comment
        .iter()
        .map(|&c| p.string_table[c as usize].as_str())
        .collect();
    let needle = format!("thread {tid} \"masked\": blocks the capture signal");
    assert!(
        comments.iter().any(|c| c.starts_with(&needle)),
        "{comments:?}"
    );

    // Signalled anyway (no up-front check): the writer gives up after the timeout, then sees
    // the signal still pending and does not queue another.
    heaprof::__private::set_threads_capture_options(Duration::from_millis(100), false);
    let mut d1 = Vec::new();
    threads().write_to(&mut d1, 2).unwrap();
    let d1 = String::from_utf8(d1).unwrap();
    assert!(
        d1.contains(&format!(
            "thread {tid} \"masked\":\nheaprof: no stack: the thread did not answer within"
        )),
        "{d1}"
    );
    let mut d2 = Vec::new();
    threads().write_to(&mut d2, 2).unwrap();
    let d2 = String::from_utf8(d2).unwrap();
    assert!(d2.contains("still pending"), "{d2}");
    heaprof::__private::set_threads_capture_options(Duration::from_millis(500), true);

    // Unmasked: the stale signal is delivered and dropped; the next round captures it.
    unmask.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(30));
    let mut out = Vec::new();
    threads().write_to(&mut out, 0).unwrap();
    let p = common::decode(&out);
    assert!(has(&stack_of(&p, "masked"), "park_in_sleep"));
    stop.store(true, Ordering::SeqCst);
    h.join().unwrap();
}

#[test]
fn debug2_is_one_block_per_thread() {
    let parked = park_three("dm");
    let mut out = Vec::new();
    threads().write_to(&mut out, 2).unwrap();
    let text = String::from_utf8(out).unwrap();
    for (name, tid) in &parked.tids {
        let head = format!("thread {tid} \"{name}\":\n");
        let at = text
            .find(&head)
            .unwrap_or_else(|| panic!("{head:?} missing:\n{text}"));
        let block = &text[at..];
        let block = &block[..block.find("\n\n").unwrap()];
        let f = match name.as_str() {
            "dm-cv" => "park_in_condvar",
            "dm-sleep" => "park_in_sleep",
            _ => "spin_busy",
        };
        let line = block
            .lines()
            .position(|l| l.ends_with(f))
            .unwrap_or_else(|| panic!("{f} not in\n{block}"));
        let next = block.lines().nth(line + 1).unwrap();
        assert!(
            next.starts_with('\t') && next.contains("threads_profile.rs:"),
            "{block}"
        );
    }
    drop(parked);
}

#[test]
fn go_tool_pprof_reads_debug0_and_debug1() {
    let parked = park_three("gp");
    let mut pb = Vec::new();
    threads().write_to(&mut pb, 0).unwrap();
    let mut txt = Vec::new();
    threads().write_to(&mut txt, 1).unwrap();
    let text = String::from_utf8(txt.clone()).unwrap();
    let total: usize = text
        .lines()
        .next()
        .unwrap()
        .strip_prefix("threads profile: total ")
        .unwrap()
        .parse()
        .unwrap();
    assert!(total >= 4, "{text}");
    assert!(text.contains("park_in_sleep"), "{text}");
    let f0 = common::write_scratch("threads.pb.gz", &pb);
    let f1 = common::write_scratch("threads.txt", &txt);
    let Some(raw) = common::go_pprof(&["-raw", &f0]) else {
        return;
    };
    assert!(raw.contains("threads/count"), "{raw}");
    assert!(raw.contains("park_in_condvar"), "{raw}");
    assert!(raw.contains("gp-busy"), "labels: {raw}");
    let exe = std::env::current_exe().unwrap();
    let raw = common::go_pprof(&["-raw", exe.to_str().unwrap(), &f1]).unwrap();
    assert!(raw.contains("park_in_sleep"), "{raw}");
    drop(parked);
}
