//! Bad input and bad usage: each kind of file that is not a profile gets its own message on
//! stderr and exit code 1; command-line mistakes exit 2 (clap).

mod support;

use std::io::Write;

use support::{heaprof, write_scratch};

/// Runs `heaprof ARGS` and returns (exit code, stderr), asserting nothing went to stdout.
fn fails(args: &[&str]) -> (Option<i32>, String) {
    let out = heaprof(args);
    assert!(!out.status.success(), "heaprof {args:?} succeeded");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    w.write_all(body).unwrap();
    w.finish().unwrap()
}

/// A real (if small) heap profile: heaprof writes one even when it is not the allocator.
fn real_profile() -> Vec<u8> {
    let mut pb = Vec::new();
    heaprof::write_heap_profile(&mut pb).unwrap();
    assert!(heaprof::read_profile(&pb).is_ok());
    pb
}

#[test]
fn each_bad_file_says_what_is_wrong() {
    let good = real_profile();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.pb.gz",
            good[..good.len() / 2].to_vec(),
            "gzip stream is truncated or corrupt",
        ),
        (
            "garbage.bin",
            b"hello, this is not a profile\n".to_vec(),
            "neither gzip-compressed nor a pprof protobuf",
        ),
        (
            "garbage.gz",
            gzip(&garbage),
            "gzip-compressed, but the content is not a pprof protobuf",
        ),
        ("empty", Vec::new(), "empty input"),
        ("empty.gz", gzip(b""), "gzip-compressed, but empty inside"),
        (
            "legacy.txt",
            b"heap profile: 1: 8 [1: 8] @ heap/1048576\n1: 8 [1: 8] @ 0x1\n".to_vec(),
            "legacy text profile (debug=1)",
        ),
    ];
    let mut messages = Vec::new();
    for (name, bytes, expect) in &cases {
        let path = write_scratch(name, bytes);
        for cmd in [
            vec!["top", path.as_str()],
            vec!["flamegraph", path.as_str(), "-o", "/dev/null"],
            vec!["diff", path.as_str(), path.as_str()],
        ] {
            let (code, err) = fails(&cmd);
            assert_eq!(code, Some(1), "{cmd:?}: {err}");
            assert!(err.starts_with("heaprof: "), "{cmd:?}: {err}");
            assert!(
                err.contains(expect),
                "{name}: expected {expect:?}, got: {err}"
            );
            assert!(
                err.contains(name),
                "{name}: the message names the file: {err}"
            );
            assert_eq!(err.lines().count(), 1, "one line: {err}");
        }
        messages.push(fails(&["top", &path]).1);
    }
    // Distinct messages for distinct problems.
    for (i, a) in messages.iter().enumerate() {
        for b in &messages[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn missing_files_are_named() {
    let missing = std::env::temp_dir().join("heaprof-cli-no-such-file.pb.gz");
    let missing = missing.to_str().unwrap();
    let (code, err) = fails(&["top", missing]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("cannot read {missing}")) && err.contains("No such file"),
        "{err}"
    );
    // In a diff, the missing one of the two is named.
    let good = write_scratch("good.pb.gz", &real_profile());
    let (code, err) = fails(&["diff", &good, missing]);
    assert_eq!(code, Some(1));
    assert!(err.contains(missing) && !err.contains(&good), "{err}");
    let (code, err) = fails(&["diff", missing, &good]);
    assert_eq!(code, Some(1));
    assert!(err.contains(missing), "{err}");
    // An output file that cannot be written.
    let threads = write_scratch("threads.pb.gz", &threadcreate_profile());
    let (code, err) = fails(&["flamegraph", &threads, "-o", "/nonexistent-dir/x.svg"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot write /nonexistent-dir/x.svg"), "{err}");
    // A profile without samples has nothing to draw.
    let (code, err) = fails(&["flamegraph", &good, "-o", "/dev/null"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nothing to draw"), "{err}");
}

/// The threadcreate profile: one sample per thread this process created (the test
/// harness's threads at least), without heaprof as the allocator.
fn threadcreate_profile() -> Vec<u8> {
    // A thread of our own, so there is at least one.
    std::thread::spawn(|| {}).join().unwrap();
    let mut pb = Vec::new();
    heaprof::lookup("threadcreate")
        .expect("threadcreate profile")
        .write_to(&mut pb, 0)
        .unwrap();
    pb
}

#[test]
fn a_base_without_the_sample_type_is_refused() {
    let heap = write_scratch("heap-for-base.pb.gz", &real_profile());
    let threads = write_scratch("threadcreate.pb.gz", &threadcreate_profile());
    let (code, err) = fails(&["diff", &threads, &heap]);
    assert_eq!(code, Some(1));
    assert!(err.contains("has no sample type \"inuse_space\""), "{err}");
    assert!(err.contains("it has: threadcreate"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"][..],
        &["top"][..],
        &["diff", "only-one"][..],
        &["flamegraph", "x.pb.gz"][..], // no -o
        &["top", "x.pb.gz", "-n", "many"][..],
    ] {
        let (code, err) = fails(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains("Usage") || err.contains("--help"),
            "{args:?}: {err}"
        );
    }
    let help = heaprof(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for cmd in ["top", "diff", "flamegraph"] {
        assert!(text.contains(cmd), "{text}");
    }
}
