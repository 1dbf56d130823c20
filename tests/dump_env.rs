//! End to end: `heaprof::init_from_env()` in the `server` example enables signal dumps and
//! the at-exit heap profile from `HEAPROF_DUMP_*`; invalid values print one line and leave
//! the feature off without stopping the program.

mod common;
mod server_proc;

use server_proc::{fresh_dir, Server};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

#[test]
fn env_enables_dumps_with_prefix_profiles_and_at_exit() {
    let dir = fresh_dir("env");
    let dumps = dir.join("dumps");
    std::fs::create_dir(&dumps).unwrap();
    let exit_path = dir.join("at-exit.pb.gz");
    let mut s = Server::start(
        &dir,
        &[
            ("HEAPROF_DUMP_SIGNAL", "usr2"),
            ("HEAPROF_DUMP_DIR", dumps.to_str().unwrap()),
            ("HEAPROF_DUMP_PREFIX", "svc"),
            ("HEAPROF_DUMP_PROFILES", "heap, allocs, mutex"),
            ("HEAPROF_DUMP_AT_EXIT", "at-exit.pb.gz"),
            ("HEAPROF_RATE", "16k"),
        ],
        &["127.0.0.1:0"],
    );
    s.signal(libc::SIGUSR2);
    s.wait_stderr(|l| l.starts_with("heaprof: dump 1 "));
    let pid = s.pid;
    let stats = s.finish();
    assert_eq!((stats.files_written, stats.write_errors), (3, 0));
    let mutex =
        common::decode(&std::fs::read(dumps.join(format!("svc.{pid}.1.mutex.pb.gz"))).unwrap());
    assert_eq!(common::sample_type(&mutex, 1), "delay");
    for name in ["heap", "allocs"] {
        let f = dumps.join(format!("svc.{pid}.1.{name}.pb.gz"));
        let p = common::decode(&std::fs::read(&f).unwrap());
        let default = &p.string_table[p.default_sample_type as usize];
        let want = if name == "heap" {
            "inuse_space"
        } else {
            "alloc_space"
        };
        assert!(
            default == want || (default.is_empty() && name == "heap"),
            "{name}: {default}"
        );
    }
    assert!(
        stats
            .stderr
            .iter()
            .any(|l| l.contains("wrote the heap profile to") && l.contains("at-exit.pb.gz")),
        "{:#?}",
        stats.stderr
    );
    let p = common::decode(&std::fs::read(&exit_path).unwrap());
    assert!(!p.sample.is_empty(), "empty at-exit profile");
    assert!(
        !stats.stderr.iter().any(|l| l.contains("ignoring")),
        "{:#?}",
        stats.stderr
    );
}

#[test]
fn invalid_values_warn_once_and_leave_the_feature_off() {
    let dir = fresh_dir("env-bad");
    let s = Server::start(
        &dir,
        &[
            ("HEAPROF_DUMP_SIGNAL", "KILL"),
            ("HEAPROF_DUMP_AT_EXIT", "/no/such/heaprof/dir/x.pb.gz"),
            ("HEAPROF_RATE", "lots"),
        ],
        &["127.0.0.1:0"],
    );
    let stats = s.finish();
    let warned = |var: &str| {
        stats
            .stderr
            .iter()
            .filter(|l| l.starts_with(&format!("heaprof: ignoring {var}=")))
            .count()
    };
    assert_eq!(warned("HEAPROF_DUMP_SIGNAL"), 1, "{:#?}", stats.stderr);
    assert_eq!(warned("HEAPROF_DUMP_AT_EXIT"), 1, "{:#?}", stats.stderr);
    assert_eq!(warned("HEAPROF_RATE"), 1, "{:#?}", stats.stderr);
    assert!(!stats
        .stderr
        .iter()
        .any(|l| l.contains("wrote the heap profile")));

    // The dir alone (no signal) is reported, and the example's own SIGUSR1 setup still works.
    let s = Server::start(&dir, &[("HEAPROF_DUMP_PREFIX", "x")], &["127.0.0.1:0"]);
    let stats = s.finish();
    assert!(
        stats.stderr.iter().any(|l| l.starts_with(
            "heaprof: ignoring HEAPROF_DUMP_PREFIX=x: HEAPROF_DUMP_SIGNAL is not set"
        )),
        "{:#?}",
        stats.stderr
    );
}
