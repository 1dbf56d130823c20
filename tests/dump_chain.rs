//! In-process: a handler the application installed earlier for the dump signal keeps
//! being called (with its `siginfo`), the dump is still written, and a second
//! `dump_on_signal` is refused.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

static FOREIGN_CALLS: AtomicU64 = AtomicU64::new(0);
static FOREIGN_SIGNO: AtomicI32 = AtomicI32::new(0);

extern "C" fn foreign(sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    FOREIGN_CALLS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo (chained through heaprof).
    let signo = unsafe { (*info).si_signo };
    FOREIGN_SIGNO.store(signo, Ordering::SeqCst);
    let _ = sig;
}

#[test]
fn chains_to_the_previous_handler_and_installs_once() {
    // SAFETY: a zeroed sigaction is valid; the handler has the SA_SIGINFO signature.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction =
            foreign as extern "C" fn(i32, *mut libc::siginfo_t, *mut libc::c_void) as usize;
        act.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut act.sa_mask);
        assert_eq!(
            libc::sigaction(libc::SIGUSR2, &act, std::ptr::null_mut()),
            0
        );
    }
    let dir = std::env::temp_dir().join(format!("heaprof-chain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(heaprof::dump_stats().is_none());
    let h = heaprof::dump_on_signal(heaprof::DumpConfig {
        signal: Some(libc::SIGUSR2),
        dir: dir.clone(),
        prefix: "chain".into(),
        profiles: vec!["heap".into(), "allocs".into()],
        ..Default::default()
    })
    .unwrap();

    // SAFETY: raise(3) delivers SIGUSR2 to this thread before returning.
    assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
    assert_eq!(
        FOREIGN_CALLS.load(Ordering::SeqCst),
        1,
        "previous handler not called"
    );
    assert_eq!(FOREIGN_SIGNO.load(Ordering::SeqCst), libc::SIGUSR2);

    let deadline = Instant::now() + Duration::from_secs(300); // hang guard only
    while h.stats().dumps_finished < 1 {
        assert!(Instant::now() < deadline, "no dump: {:?}", h.stats());
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = h.stats();
    assert_eq!(
        (st.signals_received, st.files_written, st.write_errors),
        (1, 2, 0)
    );
    assert_eq!(heaprof::dump_stats(), Some(st));
    for name in ["heap", "allocs"] {
        let bytes = std::fs::read(h.path_for(1, name)).unwrap();
        assert!(
            heaprof::top_table(&bytes, 5).is_ok(),
            "{name} does not decode"
        );
    }

    let again = heaprof::dump_on_signal(heaprof::DumpConfig {
        dir,
        ..Default::default()
    })
    .unwrap_err();
    assert!(again.to_string().contains("already enabled"), "{again}");
}
