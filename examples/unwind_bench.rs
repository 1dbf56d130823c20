//! Unwinder cost and accuracy: `cargo run --release --example unwind_bench`.
//!
//! For chains of 10, 30 and 60 `#[inline(never)]` frames: ns per warm `capture`, ns per
//! `backtrace::trace` (return addresses only, no symbols), and frames recovered by each.
//! Also ns per `capture_from_ucontext` inside a SIGPROF handler (including signal delivery).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use heaprof::__private::{capture, capture_from_ucontext, global_init, stats, MAX_DEPTH};

#[inline(never)]
fn chain(depth: usize, leaf: &mut dyn FnMut()) -> usize {
    if depth == 0 {
        leaf();
        return 0;
    }
    black_box(chain(black_box(depth - 1), leaf)) + 1
}

fn ns_per<F: FnMut()>(iters: u32, mut f: F) -> f64 {
    f(); // warm
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

static SIG_NS: AtomicU64 = AtomicU64::new(0);
static SIG_FRAMES: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigprof(_s: libc::c_int, _i: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let mut frames = [0usize; MAX_DEPTH];
    let t = Instant::now();
    // SAFETY: uc is this handler's ucontext argument.
    let n = unsafe { capture_from_ucontext(uc, &mut frames) };
    SIG_NS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    SIG_FRAMES.store(n, Ordering::Relaxed);
}

fn main() {
    global_init();
    println!("depth | capture ns | frames | backtrace::trace ns | frames | same addrs | in-handler ns | frames");
    for depth in [10usize, 30, 60] {
        let mut frames = [0usize; 128];
        let mut n = 0;
        let ours = ns_per(100_000, || {
            chain(depth, &mut || n = capture(&mut frames));
        });
        let mut bt = [0usize; 128];
        let mut m = 0;
        let theirs = ns_per(5_000, || {
            chain(depth, &mut || {
                m = 0;
                backtrace::trace(|f| {
                    bt[m] = f.ip() as usize;
                    m += 1;
                    m < bt.len()
                });
            });
        });
        // Compare from our frames[1] (chain(0)'s call of the leaf) through the chain's
        // outermost frame; the frames above differ (two different closures call `chain`).
        let j = bt[..m].iter().position(|&a| a == frames[1]);
        let same = j.map(|j| {
            let k = (depth + 1).min(m - j).min(n - 1);
            bt[j..j + k] == frames[1..1 + k]
        });
        let bt_frames = j.map_or(m, |j| m - j + 1);
        // In a SIGPROF handler (thread interrupted inside the chain's leaf).
        // SAFETY: a plain SA_SIGINFO handler for SIGPROF.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigprof as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGPROF, &sa, std::ptr::null_mut());
        }
        SIG_NS.store(0, Ordering::Relaxed);
        let iters = 20_000;
        chain(depth, &mut || {
            for _ in 0..iters {
                // SAFETY: delivered synchronously to this thread.
                unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGPROF) };
            }
        });
        let sig = SIG_NS.load(Ordering::Relaxed) as f64 / iters as f64;
        println!(
            "{depth:5} | {ours:10.0} | {n:6} | {theirs:19.0} | {bt_frames:6} | {same:?} | {sig:13.0} | {}",
            SIG_FRAMES.load(Ordering::Relaxed)
        );
    }
    println!("{:?}", stats());
    // Where the two stop: the outermost frames of each, symbolized.
    let mut frames = [0usize; 128];
    let mut n = 0;
    let mut bt = Vec::new();
    chain(3, &mut || {
        n = capture(&mut frames);
        backtrace::trace(|f| {
            bt.push(f.ip() as usize);
            true
        });
    });
    let name = |a: usize| {
        let mut s = String::from("?");
        backtrace::resolve(a as *mut libc::c_void, |sym| {
            s = sym.name().map_or("?".into(), |n| n.to_string());
        });
        s
    };
    let ours: Vec<_> = frames[n.saturating_sub(2)..n]
        .iter()
        .map(|&a| name(a))
        .collect();
    let theirs: Vec<_> = bt[bt.len().saturating_sub(2)..]
        .iter()
        .map(|&a| name(a))
        .collect();
    println!("outermost frames: capture {ours:?}; backtrace {theirs:?}");
}
