//! Unwinder accuracy under threads and signals (crate-internal API via `__private`).
//!
//! - 4 threads × 10k captures at varying depth, each compared with a `backtrace` reference.
//! - SIGUSR2 sent to a thread spinning in a known function: `capture_from_ucontext` in the
//!   handler starts at that function's PC and contains its caller; `capture` in the handler
//!   crosses the kernel signal frame and reaches the same frames; also with `SA_ONSTACK`.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use heaprof::__private::{capture, capture_from_ucontext, global_init, thread_init, MAX_DEPTH};

#[inline(never)]
fn chain(depth: usize, leaf: &mut dyn FnMut()) -> usize {
    if depth == 0 {
        leaf();
        return 0;
    }
    black_box(chain(black_box(depth - 1), leaf)) + 1
}

/// `capture`, then (if `with_bt`) the `backtrace` return addresses from `ours[1]` on.
#[inline(never)]
fn leaf(with_bt: bool, ours: &mut [usize; MAX_DEPTH], n: &mut usize, bt_out: &mut Vec<usize>) {
    *n = capture(ours);
    if with_bt {
        let mut all = Vec::new();
        backtrace::trace(|f| {
            all.push(f.ip() as usize);
            true
        });
        let j = all
            .iter()
            .position(|&a| a == ours[1])
            .expect("ours[1] in backtrace");
        *bt_out = all[j..].to_vec();
    }
}

/// One capture at `depth` through the same code path each time: (ours[1..], backtrace's).
#[inline(never)]
fn run(depth: usize, with_bt: bool) -> (Vec<usize>, Vec<usize>) {
    let (mut ours, mut n, mut bt) = ([0; MAX_DEPTH], 0, Vec::new());
    chain(depth, &mut || leaf(with_bt, &mut ours, &mut n, &mut bt));
    (ours[1..n].to_vec(), bt)
}

#[test]
fn four_threads_10k_captures_each_match_backtrace() {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                // The first 30 iterations take reference stacks per depth, with backtrace (one
                // call site for `run`, so every capture at depth d must be identical).
                let mut refs: Vec<Vec<usize>> = Vec::new();
                for i in 0..30 + 10_000usize {
                    let d = if i < 30 { i } else { (i * 7 + t) % 30 };
                    let (ours, bt) = run(d, i < 30);
                    if i < 30 {
                        let common = bt.len().min(ours.len());
                        assert_eq!(&ours[..common], &bt[..common], "thread {t} depth {d}");
                        assert!(bt.len().abs_diff(ours.len()) <= 1, "thread {t} depth {d}");
                        assert!(ours.len() > d);
                        refs.push(ours);
                    } else {
                        assert_eq!(ours, refs[d], "thread {t} iteration {i} depth {d}");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

// ---- signals ----

static RAW_UC: [AtomicUsize; MAX_DEPTH] = [const { AtomicUsize::new(0) }; MAX_DEPTH];
static RAW_CAP: [AtomicUsize; MAX_DEPTH] = [const { AtomicUsize::new(0) }; MAX_DEPTH];
static RAW_N: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];
/// Set by the handler when its result is in RAW_*; cleared by the sender before a signal.
static TAKEN: AtomicBool = AtomicBool::new(true);

extern "C" fn on_sigusr2(_sig: libc::c_int, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    if TAKEN.load(Ordering::Acquire) {
        return; // previous result not collected yet
    }
    let mut a = [0usize; MAX_DEPTH];
    // SAFETY: uc is this handler's ucontext argument.
    let na = unsafe { capture_from_ucontext(uc, &mut a) };
    let mut b = [0usize; MAX_DEPTH];
    let nb = capture(&mut b); // warm thread: no allocation; crosses the signal frame
    for i in 0..MAX_DEPTH {
        RAW_UC[i].store(a[i], Ordering::Relaxed);
        RAW_CAP[i].store(b[i], Ordering::Relaxed);
    }
    RAW_N[0].store(na, Ordering::Relaxed);
    RAW_N[1].store(nb, Ordering::Relaxed);
    TAKEN.store(true, Ordering::Release);
}

#[inline(never)]
fn spin_target(stop: &AtomicBool) -> u64 {
    let mut x = 0u64;
    while !stop.load(Ordering::Relaxed) {
        x = black_box(x.wrapping_mul(31).wrapping_add(1));
    }
    x
}

#[inline(never)]
fn spin_caller(stop: &AtomicBool) -> u64 {
    black_box(spin_target(stop)).wrapping_add(1)
}

/// Address to pass to `name_of` for frame `j`. `backtrace::resolve` subtracts 1 itself (it
/// assumes return addresses), so: the exact leaf PC + 1, else the return address as is.
fn pc_of(frames: &[usize], j: usize) -> usize {
    if j == 0 {
        frames[0] + 1
    } else {
        frames[j]
    }
}

/// All symbol names at `addr - 1` (inlined frames first), joined.
fn name_of(addr: usize) -> String {
    let mut names = Vec::new();
    backtrace::resolve(addr as *mut libc::c_void, |s| {
        names.push(s.name().map(|n| n.to_string()).unwrap_or_default());
    });
    names.join(" < ")
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Alt {
    /// Handler on the thread's stack.
    None,
    /// SA_ONSTACK on a 256 KiB alternate stack: the DWARF walk crosses into the thread stack.
    Big,
    /// SA_ONSTACK on std's small default alternate stack: frame-pointer fallback, no crash.
    StdSmall,
}

fn install_big_altstack() {
    let size = 256 * 1024;
    let mem = Box::leak(vec![0u8; size].into_boxed_slice());
    let ss = libc::stack_t {
        ss_sp: mem.as_mut_ptr().cast(),
        ss_flags: 0,
        ss_size: size,
    };
    // SAFETY: mem is leaked, so it outlives the thread.
    assert_eq!(unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) }, 0);
}

fn run_signal_test(alt: Alt) {
    use std::os::unix::thread::JoinHandleExt;
    global_init();
    // SAFETY: installs a plain SA_SIGINFO handler for SIGUSR2, which nothing else here uses.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr2 as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        if alt != Alt::None {
            sa.sa_flags |= libc::SA_ONSTACK;
        }
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
    }
    static STOP: AtomicBool = AtomicBool::new(false);
    STOP.store(false, Ordering::Relaxed);
    let ready = std::sync::Arc::new(AtomicBool::new(false));
    let ready2 = ready.clone();
    let th = std::thread::spawn(move || {
        thread_init();
        let mut warm = [0; MAX_DEPTH];
        capture(&mut warm);
        if alt == Alt::Big {
            install_big_altstack();
        }
        ready2.store(true, Ordering::Release);
        spin_caller(&STOP)
    });
    while !ready.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
    let pt = th.as_pthread_t();
    let mut results = Vec::new();
    for _ in 0..30 {
        TAKEN.store(false, Ordering::Release);
        // SAFETY: pt is a live thread (it spins until STOP).
        assert_eq!(unsafe { libc::pthread_kill(pt, libc::SIGUSR2) }, 0);
        while !TAKEN.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        let load = |v: &[AtomicUsize], n: usize| -> Vec<usize> {
            v[..n].iter().map(|x| x.load(Ordering::Relaxed)).collect()
        };
        let a = load(&RAW_UC, RAW_N[0].load(Ordering::Relaxed));
        let b = load(&RAW_CAP, RAW_N[1].load(Ordering::Relaxed));
        results.push((a, b));
    }
    STOP.store(true, Ordering::Relaxed);
    th.join().unwrap();
    let fallbacks = heaprof::__private::stats().fp_fallbacks;
    for (i, (a, b)) in results.iter().enumerate() {
        if alt == Alt::StdSmall {
            // Too little stack for the DWARF walk: the exact PC, then a frame-pointer guess.
            let ctx = format!("{alt:?} sample {i}: {a:x?}");
            let leaf = name_of(a[0] + 1);
            let in_loop = ["spin_target", "atomic", "wrapping", "black_box"];
            assert!(in_loop.iter().any(|f| leaf.contains(f)), "{ctx}: {leaf}");
            assert!(fallbacks >= 60, "{ctx}: fallbacks {fallbacks}");
            continue;
        }
        let ctx = format!("{alt:?} sample {i}: {a:x?} / {b:x?}");
        assert!(a.len() >= 5, "{ctx}");
        // The interrupted PC is in spin_target, or (debug build) in a not-inlined callee.
        let t = (0..3).find(|&j| name_of(pc_of(a, j)).contains("spin_target"));
        let t = t.unwrap_or_else(|| panic!("{ctx}: leaf {}", name_of(a[0])));
        assert!(name_of(a[t + 1]).contains("spin_caller"), "{ctx}");
        // capture() inside the handler: handler frames, then the interrupted PC exactly, then
        // the same return addresses as the ucontext walk.
        let k = b
            .iter()
            .position(|&x| x == a[0])
            .unwrap_or_else(|| panic!("{ctx}"));
        assert_eq!(&b[k..], &a[..], "{ctx}");
        assert!(
            name_of(b[0]).contains("on_sigusr2"),
            "{ctx}: {}",
            name_of(b[0])
        );
    }
}

/// Both variants share SIGUSR2 and the result statics, so they run in one test.
#[test]
fn signal_handler_captures_interrupted_function() {
    run_signal_test(Alt::None);
    run_signal_test(Alt::Big);
    run_signal_test(Alt::StdSmall);
}

// ---- stack usage in a handler ----

static MODE: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigusr1(_sig: libc::c_int, _info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let mut a = [0usize; MAX_DEPTH];
    let n = if MODE.load(Ordering::Relaxed) == 0 {
        // SAFETY: uc is this handler's ucontext argument.
        unsafe { capture_from_ucontext(uc, &mut a) }
    } else {
        capture(&mut a)
    };
    RAW_N[0].store(n, Ordering::Relaxed);
}

/// Runs the handler on a painted alternate stack and reports how much of it was used.
#[test]
fn handler_stack_usage() {
    global_init();
    let report = std::thread::spawn(|| {
        thread_init();
        let mut warm = [0; MAX_DEPTH];
        capture(&mut warm);
        let size = 256 * 1024;
        let mem = Box::leak(vec![0xa5u8; size].into_boxed_slice());
        let ss = libc::stack_t {
            ss_sp: mem.as_mut_ptr().cast(),
            ss_flags: 0,
            ss_size: size,
        };
        // SAFETY: mem is leaked; SIGUSR1 is used only by this test.
        unsafe {
            assert_eq!(libc::sigaltstack(&ss, std::ptr::null_mut()), 0);
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigusr1 as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        }
        let mut out = Vec::new();
        for mode in 0..2 {
            mem.fill(0xa5);
            MODE.store(mode, Ordering::Relaxed);
            // SAFETY: signals this thread; the handler runs before pthread_kill returns.
            unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR1) };
            let used = size - mem.iter().position(|&b| b != 0xa5).unwrap();
            out.push((used, RAW_N[0].load(Ordering::Relaxed)));
        }
        out
    })
    .join()
    .unwrap();
    eprintln!("altstack bytes used (incl. kernel frame ~1-3 KB): capture_from_ucontext {} B ({} frames), capture {} B ({} frames)", report[0].0, report[0].1, report[1].0, report[1].1);
    assert!(report[0].1 >= 3 && report[1].1 >= 3, "{report:?}");
}
