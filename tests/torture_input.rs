//! Bad input: invalid `HEAPROF_*` values, a writer that fails mid-profile, rate changes while
//! threads allocate, rates near `usize::MAX`, and profile names with odd characters (text
//! output, dump file names).
//! (`HEAPROF_RATE`, `HEAPROF_DUMP_SIGNAL`, `HEAPROF_DUMP_AT_EXIT` and a `DUMP_*` variable
//! without a signal are covered by `dump_env.rs`.)

mod common;
mod torture_util;

use std::hint::black_box;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use torture_util::run_case_ok;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const RUNNER: &str = "child_entry";
const T: Duration = Duration::from_secs(120);

fn comments(p: &heaprof::__private::proto::Profile) -> Vec<String> {
    p.comment
        .iter()
        .map(|&i| p.string_table[i as usize].clone())
        .collect()
}

/// Child: allocate (reads RATE, SEED, STACKS, BUCKETS), init_from_env (DUMP_*), print the
/// profile's statistics comments on stdout.
fn env_probe() {
    black_box(vec![0u8; 8 << 20]);
    let e = heaprof::init_from_env();
    println!("dump enabled: {}", e.dump.is_some());
    let mut out = Vec::new();
    heaprof::write_heap_profile(&mut out).unwrap();
    for c in comments(&common::decode(&out)) {
        println!("{c}");
    }
}

fn warned(stderr: &str, var: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with(&format!("heaprof: ignoring {var}=")))
        .map(String::from)
        .collect()
}

#[test]
fn invalid_seed_and_capacities_warn_once_and_use_defaults() {
    let out = run_case_ok(
        RUNNER,
        "env_probe",
        &[
            ("HEAPROF_SEED", "0xdead"),
            ("HEAPROF_STACKS", "0"),
            ("HEAPROF_BUCKETS", "many"),
        ],
        T,
    );
    for var in ["HEAPROF_SEED", "HEAPROF_STACKS", "HEAPROF_BUCKETS"] {
        assert_eq!(warned(&out.stderr, var).len(), 1, "{var}: {}", out.stderr);
    }
    assert!(
        out.stdout.contains("heaprof.sample_rate: 524288"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(" of 16384"),
        "default stacks: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains(" of 65536"),
        "default buckets: {}",
        out.stdout
    );
    // Too large is refused like garbage.
    let out = run_case_ok(
        RUNNER,
        "env_probe",
        &[("HEAPROF_STACKS", "1000000000000")],
        T,
    );
    assert_eq!(
        warned(&out.stderr, "HEAPROF_STACKS").len(),
        1,
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains(" of 16384"), "{}", out.stdout);
}

#[test]
fn invalid_dump_settings_warn_once_and_leave_dumps_off() {
    for (var, val) in [
        ("HEAPROF_DUMP_DIR", "/no/such/heaprof/dir"),
        ("HEAPROF_DUMP_PREFIX", "a/b"),
        ("HEAPROF_DUMP_PROFILES", "heap,nosuch"),
    ] {
        let out = run_case_ok(
            RUNNER,
            "env_probe",
            &[("HEAPROF_DUMP_SIGNAL", "USR2"), (var, val)],
            T,
        );
        // One line, naming the bad value (DIR, PREFIX and PROFILES are reported as the
        // dump configuration they make up, `heaprof: HEAPROF_DUMP_*: ...`).
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("heaprof:") && !l.starts_with("heaprof: dump "))
            .collect();
        assert_eq!(lines.len(), 1, "{var}: {}", out.stderr);
        let shown = val.split(',').next_back().unwrap();
        assert!(
            lines[0].contains(shown) && lines[0].contains("stay off"),
            "{var}: {}",
            lines[0]
        );
        assert!(
            out.stdout.contains("dump enabled: false"),
            "{var}: {}",
            out.stdout
        );
    }
}

#[test]
fn the_threads_capture_signal_is_refused_for_dumps() {
    // SIGRTMIN+5 is the signal the `threads` profile interrupts threads with.
    let out = run_case_ok(
        RUNNER,
        "env_probe",
        &[("HEAPROF_DUMP_SIGNAL", "RTMIN+5")],
        T,
    );
    let lines = warned(&out.stderr, "HEAPROF_DUMP_SIGNAL");
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(lines[0].contains("threads"), "{}", lines[0]);
    assert!(out.stdout.contains("dump enabled: false"), "{}", out.stdout);
    let err = heaprof::dump_on_signal(heaprof::DumpConfig {
        signal: Some(libc::SIGRTMIN() + 5),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("threads"), "{err}");
}

/// Fails with an error after `left` bytes.
struct FailingWriter {
    left: usize,
    written: Vec<u8>,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("disk full (test)"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        self.written.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[inline(never)]
fn failing_writer_site() -> Vec<Vec<u8>> {
    black_box((0..100).map(|i| vec![i as u8; 1000]).collect())
}

#[test]
fn writer_failing_mid_profile_returns_the_error_and_next_write_works() {
    heaprof::set_heap_profile_rate(1);
    black_box(vec![0u8; 32 << 20]);
    let kept = failing_writer_site();
    let custom = heaprof::Profile::new("torture.failing");
    custom.add(1u8, 0);
    for debug in [0u8, 1] {
        for limit in [0usize, 10, 200] {
            for p in ["heap", "allocs", "threadcreate", "torture.failing"] {
                let mut w = FailingWriter {
                    left: limit,
                    written: Vec::new(),
                };
                let err = heaprof::lookup(p)
                    .unwrap()
                    .write_to(&mut w, debug)
                    .unwrap_err();
                assert!(
                    err.to_string().contains("disk full"),
                    "{p} debug={debug}: {err}"
                );
            }
        }
    }
    let mut w = FailingWriter {
        left: 100,
        written: Vec::new(),
    };
    assert!(heaprof::write_heap_profile(&mut w).is_err());
    // State intact: the next write is complete and exact.
    let mut out = Vec::new();
    heaprof::write_heap_profile(&mut out).unwrap();
    let t = common::totals_by_site(&common::decode(&out), &["failing_writer_site"]);
    assert_eq!(t["failing_writer_site"][3], 100 * 1000 + 100 * 24);
    let mut txt = Vec::new();
    custom.write_to(&mut txt, 1).unwrap();
    assert!(txt.starts_with(b"torture.failing profile: total 1\n"));
    black_box(kept);
}

#[inline(never)]
#[allow(clippy::vec_box)] // the boxes are the allocations under test
fn after_flips_site(n: usize) -> Vec<Box<[u8; 48]>> {
    black_box((0..n).map(|_| Box::new([7u8; 48])).collect())
}

fn rate_flips() {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut keep = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    keep.push(vec![t as u8; [1, 24, 100, 4000][i % 4]]);
                    if keep.len() > 64 {
                        keep.swap_remove(i % 64);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let start = std::time::Instant::now();
    let mut i = 0usize;
    while start.elapsed() < Duration::from_millis(1500) {
        heaprof::set_heap_profile_rate([0, 1, 4096, 512 * 1024][i % 4]);
        std::thread::sleep(Duration::from_micros(200));
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    heaprof::set_heap_profile_rate(1);
    let got = std::thread::spawn(|| {
        let kept = after_flips_site(300);
        let mut out = Vec::new();
        heaprof::write_heap_profile(&mut out).unwrap();
        black_box(kept);
        common::totals_by_site(&common::decode(&out), &["after_flips_site"])["after_flips_site"]
            .clone()
    })
    .join()
    .unwrap();
    assert_eq!(got, vec![301, 300 * 48 + 300 * 8, 301, 300 * 48 + 300 * 8]);
}

#[test]
fn rate_flips_while_allocating_then_rate_one_is_exact() {
    run_case_ok(RUNNER, "rate_flips", &[], T);
}

#[inline(never)]
fn extreme_rate_site(fill: u8) -> Vec<Vec<u8>> {
    black_box((0..64).map(|i| vec![fill; 1000 + i]).collect())
}

/// Child: rates near `usize::MAX` set through the public setter while this thread's
/// countdown was drawn at rate 1 and a peak was recorded, so the next sample is weighed at
/// rate 1 while the peak test and the writers see the huge rate.
fn extreme_rates() {
    let mut kept = Vec::new();
    for rate in [usize::MAX, usize::MAX - 1] {
        heaprof::set_heap_profile_rate(1);
        kept.push(extreme_rate_site(1)); // sampled: in use rises, a peak is recorded
                                         // From another thread, so this one keeps the countdown it drew at rate 1.
        std::thread::spawn(move || heaprof::set_heap_profile_rate(rate))
            .join()
            .unwrap();
        kept.push(extreme_rate_site(2)); // the first of these is sampled at the huge rate
        assert_eq!(
            heaprof::heap_profile_rate(),
            heaprof::MAX_HEAP_PROFILE_RATE,
            "clamped"
        );
        for name in ["heap", "allocs", "heap_peak"] {
            let p = heaprof::lookup(name).unwrap();
            let mut pb = Vec::new();
            p.write_to(&mut pb, 0).unwrap();
            let decoded = common::decode(&pb);
            assert_eq!(
                decoded.period,
                heaprof::MAX_HEAP_PROFILE_RATE as i64,
                "{name}"
            );
            let mut txt = Vec::new();
            p.write_to(&mut txt, 1).unwrap();
            assert!(txt.starts_with(b"heap profile: "), "{name}");
        }
    }
    black_box(kept);
}

#[test]
fn rates_near_usize_max_are_clamped_and_nothing_overflows() {
    run_case_ok(RUNNER, "extreme_rates", &[], T);
}

const ODD: &str = "odd.näme%s\"'$(x)*?[]{}<>|;&#~\\";

fn odd_names() {
    let p = heaprof::Profile::new(ODD);
    p.add(1u32, 0);
    let mut txt = Vec::new();
    p.write_to(&mut txt, 1).unwrap();
    let text = String::from_utf8(txt).unwrap();
    assert!(
        text.starts_with(&format!("{ODD} profile: total 1\n")),
        "{text}"
    );
    let mut pb = Vec::new();
    p.write_to(&mut pb, 0).unwrap();
    common::decode(&pb);
    for bad in ["", "a b", "tab\there", "nl\n", "a\u{7}"] {
        assert!(heaprof::Profile::try_new(bad).is_err(), "{bad:?} accepted");
    }
    let slash = heaprof::Profile::new("odd/slash");
    let dir = std::env::temp_dir().join(format!("heaprof-odd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = |profiles: Vec<String>| heaprof::DumpConfig {
        signal: Some(libc::SIGUSR2),
        dir: dir.clone(),
        prefix: "odd".into(),
        profiles,
        ..Default::default()
    };
    let err = heaprof::dump_on_signal(cfg(vec![slash.name().into()])).unwrap_err();
    assert!(
        err.to_string().contains("cannot be part of a file name"),
        "{err}"
    );
    let h = heaprof::dump_on_signal(cfg(vec![ODD.into(), "heap".into()])).unwrap();
    // SAFETY: a signal heaprof handles, to our own pid.
    unsafe { libc::kill(libc::getpid(), libc::SIGUSR2) };
    while h.stats().dumps_finished == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(h.stats().write_errors, 0);
    let path = h.path_for(1, ODD);
    assert!(path.file_name().unwrap().to_str().unwrap().contains(ODD));
    common::decode(&std::fs::read(&path).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn odd_profile_names_in_text_and_dump_file_names() {
    run_case_ok(RUNNER, "odd_names", &[], T);
}

#[test]
fn child_entry() {
    match torture_util::case().as_deref() {
        None => {}
        Some("env_probe") => env_probe(),
        Some("rate_flips") => rate_flips(),
        Some("extreme_rates") => extreme_rates(),
        Some("odd_names") => odd_names(),
        Some(other) => panic!("unknown case {other}"),
    }
}
