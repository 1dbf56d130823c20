//! End to end: the `server` example (allocating on two threads) dumps its heap profile on
//! SIGUSR1. Files are complete, distinct and private; a burst of 100 signals never shows a
//! partial file and every signal is served; a symlink planted at a target is not followed.

mod common;
mod server_proc;

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use server_proc::{fresh_dir, Server};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

/// Final-name dump files in `dir` (`server.<pid>.<seq>.heap.pb.gz`) as (seq, path).
fn final_files(dir: &Path, pid: i32) -> Vec<(u64, std::path::PathBuf)> {
    let prefix = format!("server.{pid}.");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(seq) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".heap.pb.gz"))
        {
            out.push((seq.parse().expect("numeric seq"), dir.join(&name)));
        }
    }
    out.sort();
    out
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n.contains(".tmp."))
        .collect()
}

fn assert_heap_profile(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let p = common::decode(&bytes);
    let types: Vec<String> = (0..p.sample_type.len())
        .map(|i| common::sample_type(&p, i))
        .collect();
    assert_eq!(
        types,
        [
            "alloc_objects",
            "alloc_space",
            "inuse_objects",
            "inuse_space"
        ],
        "{}",
        path.display()
    );
}

#[test]
fn each_signal_writes_a_complete_distinct_private_file() {
    let dir = fresh_dir("each");
    let mut s = Server::start(&dir, &[("HEAPROF_RATE", "16k")], &["127.0.0.1:0"]);
    for seq in 1..=3u64 {
        s.signal(libc::SIGUSR1);
        let line = s.wait_stderr(|l| l.starts_with(&format!("heaprof: dump {seq} ")));
        assert!(line.contains("wrote "), "{line}");
    }
    let pid = s.pid;
    let stats = s.finish();
    assert_eq!(
        (stats.signals_received, stats.signals_served, stats.dumps),
        (3, 3, 3)
    );
    assert_eq!((stats.files_written, stats.write_errors), (3, 0));
    let files = final_files(&dir, pid);
    assert_eq!(files.iter().map(|f| f.0).collect::<Vec<_>>(), [1, 2, 3]);
    for (_, f) in &files {
        assert_heap_profile(f);
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // The last one shows the workload's live session cache.
    let p = common::decode(&std::fs::read(&files[2].1).unwrap());
    let sites = common::totals_by_site(&p, &["grow_session_cache"]);
    assert!(
        sites.get("grow_session_cache").is_some_and(|v| v[3] > 0),
        "no in-use bytes at grow_session_cache: {sites:?}"
    );
    assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
}

#[test]
fn burst_of_100_signals_coalesces_serves_all_and_never_shows_a_partial_file() {
    let dir = fresh_dir("burst");
    let mut s = Server::start(&dir, &[("HEAPROF_RATE", "16k")], &["127.0.0.1:0"]);
    let pid = s.pid;
    // Warm-up dump: the first one loads debug info and takes long; the burst then meets
    // dumps of normal length, so signals arrive while dumps are being written.
    s.signal(libc::SIGUSR1);
    s.wait_stderr(|l| l.starts_with("heaprof: dump 1 "));
    let done = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicUsize::new(0));
    // Poll the directory during the burst: every final-name file must decode in full.
    let poller = {
        let (dir, done, checked) = (dir.clone(), Arc::clone(&done), Arc::clone(&checked));
        std::thread::spawn(move || {
            let mut decoded = BTreeSet::new();
            loop {
                let finished = done.load(Ordering::Acquire);
                for (seq, f) in final_files(&dir, pid) {
                    if decoded.insert(seq) {
                        assert_heap_profile(&f);
                        checked.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if finished {
                    return decoded;
                }
                std::thread::yield_now();
            }
        })
    };
    for _ in 0..100 {
        s.signal(libc::SIGUSR1);
        // Pacing, not timing: spread the burst over several dumps (pending standard
        // signals merge in the kernel, so back-to-back kills would mostly arrive as one).
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let stats = s.finish();
    done.store(true, Ordering::Release);
    let seen = poller.join().expect("a visible dump file did not decode");
    eprintln!(
        "burst: received {} dumps {} coalesced {} polled-and-decoded {}",
        stats.signals_received,
        stats.dumps,
        stats.coalesced,
        checked.load(Ordering::Relaxed)
    );
    // Standard signals pending at once merge in the kernel: 2..=101 reach the handler.
    assert!((2..=101).contains(&stats.signals_received), "{stats:?}");
    assert_eq!(
        stats.signals_served, stats.signals_received,
        "a signal went unserved"
    );
    assert_eq!(stats.dumps, stats.dumps_finished);
    assert_eq!(stats.files_written, stats.dumps);
    assert_eq!(stats.write_errors, 0);
    assert_eq!(stats.coalesced, stats.signals_received - stats.dumps);
    let files = final_files(&dir, pid);
    let seqs: Vec<u64> = files.iter().map(|f| f.0).collect();
    assert_eq!(
        seqs,
        (1..=stats.dumps).collect::<Vec<_>>(),
        "distinct, in order, none lost"
    );
    assert_eq!(seen.len() as u64, stats.dumps);
    assert!(checked.load(Ordering::Relaxed) > 0);
    // One stderr line per dump, the last one counting every signal received.
    let dump_lines: Vec<&String> = stats
        .stderr
        .iter()
        .filter(|l| l.starts_with("heaprof: dump "))
        .collect();
    assert_eq!(dump_lines.len() as u64, stats.dumps, "{:#?}", stats.stderr);
    let last = dump_lines.last().unwrap();
    assert!(
        last.contains(&format!("({} signals received", stats.signals_received)),
        "{last}"
    );
    assert!(temp_files(&dir).is_empty(), "{:?}", temp_files(&dir));
}

#[test]
fn symlink_planted_at_the_target_is_replaced_not_followed() {
    let dir = fresh_dir("symlink");
    let victim_dir = fresh_dir("symlink-victim");
    let victim = victim_dir.join("precious.txt");
    std::fs::write(&victim, b"do not overwrite").unwrap();
    let victim_ino = std::fs::metadata(&victim).unwrap().ino();

    let mut s = Server::start(&dir, &[], &["127.0.0.1:0"]);
    let target = dir.join(format!("server.{}.1.heap.pb.gz", s.pid));
    std::os::unix::fs::symlink(&victim, &target).unwrap();
    s.signal(libc::SIGUSR1);
    s.wait_stderr(|l| l.starts_with("heaprof: dump 1 "));
    let stats = s.finish();
    assert_eq!((stats.files_written, stats.write_errors), (1, 0));

    assert_eq!(std::fs::read(&victim).unwrap(), b"do not overwrite");
    assert_eq!(std::fs::metadata(&victim).unwrap().ino(), victim_ino);
    let m = std::fs::symlink_metadata(&target).unwrap();
    assert!(m.file_type().is_file(), "the link itself is replaced");
    assert_heap_profile(&target);
}
