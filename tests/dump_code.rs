//! Automatic dumps configured in code (`start_dumps` with `DumpConfig`), no signal: a growth
//! step held by this process gives a dump with the step in it; the configuration is checked
//! and there is one per process.

mod common;

use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const MIB: u64 = 1 << 20;

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    // A hang guard only: the first dump of a debug build loads debug info (seconds).
    let deadline = Instant::now() + Duration::from_secs(300);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn growth_dumps_from_code_without_a_signal() {
    let dir = std::env::temp_dir().join(format!("heaprof-dump-code-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = heaprof::DumpConfig {
        signal: None,
        dir: dir.clone(),
        prefix: "code".into(),
        on_growth: Some(32 * MIB),
        min_interval: Duration::ZERO,
        ..Default::default()
    };
    let err = heaprof::dump_on_signal(config.clone()).unwrap_err();
    assert!(err.to_string().contains("needs a signal"), "{err}");
    assert!(heaprof::dump_stats().is_none());
    let h = heaprof::start_dumps(config.clone()).unwrap();
    assert_eq!(
        (
            h.signal(),
            h.on_growth(),
            h.rss_threshold(),
            h.min_interval()
        ),
        (None, Some(32 * MIB), None, Duration::ZERO)
    );

    let block = vec![7u8; 40 << 20];
    wait_until("the growth dump", || {
        heaprof::dump_stats().is_some_and(|s| s.dumps_finished == 1)
    });
    let s = h.stats();
    assert_eq!(
        (s.growth_dumps, s.rss_dumps, s.signal_dumps, s.files_written),
        (1, 0, 0, 1)
    );
    let p = common::decode(&std::fs::read(h.path_for(1, "heap")).unwrap());
    let in_use = common::total_of(&p, "inuse_space") as u64;
    assert!(
        (40 * MIB..=42 * MIB).contains(&in_use),
        "the 40 MiB block and little else: {in_use}"
    );
    drop(block);

    let again = heaprof::start_dumps(config).unwrap_err();
    assert!(again.to_string().contains("already enabled"), "{again}");
}
