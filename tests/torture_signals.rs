//! Signals: SIGUSR1 dumps every 50 ms while two threads allocate heavily, for ~10 s; every
//! dump parses and every signal is served. CPU profiling while a handler of the program runs
//! on a small alternate signal stack. (Chaining to a foreign handler: `dump_chain.rs`.)

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

/// A busy signal handler of the program's own, on a small alternate signal stack
/// (`SA_ONSTACK`, as std's SIGSEGV handler and Go-compatible handlers run), while the CPU
/// profiler's SIGPROF keeps coming at 1000 Hz: every SIGPROF that lands in it finds only what
/// is left of that stack. They must be counted as lost samples, not overflow it (a nested
/// SIGPROF in heaprof's own dump handler, which runs there too, crashed CI this way).
fn busy_handler_on_small_altstack() {
    static HANDLER_CPU_NANOS: AtomicU64 = AtomicU64::new(0);
    extern "C" fn on_usr2(_: libc::c_int) {
        let start = common::thread_cpu_nanos();
        while common::thread_cpu_nanos() - start < 300_000_000 {
            std::hint::spin_loop();
        }
        let spent = common::thread_cpu_nanos() - start;
        HANDLER_CPU_NANOS.store(spent as u64, Ordering::Relaxed);
    }
    // Room for the kernel's frame of this handler and of one nested signal, and 4 KiB for the
    // handler's own frames (with less, a SIGPROF landing deep in them cannot even get its
    // kernel frame, and the kernel kills the process: not what this tests). Still well under
    // what the SIGPROF handler needs, so every SIGPROF landing in the handler is dropped.
    // SAFETY: getauxval has no preconditions.
    let min = (unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize).max(libc::MINSIGSTKSZ);
    let size = 2 * min + 4096;
    let stack: &'static mut [u8] = Vec::leak(vec![0u8; size]);
    let ss = libc::stack_t {
        ss_sp: stack.as_mut_ptr().cast(),
        ss_flags: 0,
        ss_size: size,
    };
    // SAFETY: `ss` describes memory leaked for the life of the process; the handler is an
    // `extern "C" fn(c_int)`; a zeroed sigaction with the fields below is valid.
    unsafe {
        assert_eq!(libc::sigaltstack(&ss, std::ptr::null_mut()), 0);
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_usr2 as extern "C" fn(libc::c_int) as usize;
        act.sa_flags = libc::SA_ONSTACK;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR2, &act, std::ptr::null_mut()),
            0
        );
    }
    let cpu = common::SharedBuf::default();
    heaprof::set_cpu_profile_rate(1000);
    let profile = heaprof::CpuProfile::start(cpu).unwrap();
    // SAFETY: sends a signal we handle to this thread.
    unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) };
    let cpu = profile.stop().unwrap();
    let handler_ms = HANDLER_CPU_NANOS.load(Ordering::Relaxed) / 1_000_000;
    let p = common::decode(&cpu.bytes());
    let lost: i64 = p
        .sample
        .iter()
        .filter(|s| {
            common::stack_names(&p, s).first().map(String::as_str)
                == Some(heaprof::__private::LOST_FRAME)
        })
        .map(|s| s.value[0])
        .sum();
    let comments: Vec<_> = p
        .comment
        .iter()
        .map(|&i| p.string_table[i as usize].clone())
        .collect();
    println!("altstack: handler ran {handler_ms} ms of CPU; {lost} samples lost; {comments:?}");
    // Up to 300 SIGPROFs land in the handler at 1000 Hz; CPU-time timers fire on the
    // scheduler tick (75 at 250 Hz on an idle machine, 26 seen on a loaded one, where the
    // kernel checks them less often). Without the check none is counted lost.
    assert!(
        handler_ms >= 300 && lost >= 5,
        "{handler_ms} ms, {lost} lost"
    );
    assert!(
        comments.iter().any(|c| c.contains(&format!(
            "{lost} lost ({lost} of them interrupting a handler"
        ))),
        "{comments:?}"
    );
}

/// A SIGPROF landing in a handler on a small alternate signal stack is a lost sample.
#[test]
fn cpu_profiling_while_a_handler_runs_on_a_small_alternate_stack() {
    let out = run_case_ok("child_entry", "altstack", &[], Duration::from_secs(120));
    eprintln!(
        "{}",
        out.stdout
            .lines()
            .find(|l| l.starts_with("altstack:"))
            .unwrap_or("")
    );
}

#[test]
fn child_entry() {
    match torture_util::case().as_deref() {
        None => {}
        Some("storm") => storm(),
        Some("altstack") => busy_handler_on_small_altstack(),
        Some(other) => panic!("unknown case {other}"),
    }
}
