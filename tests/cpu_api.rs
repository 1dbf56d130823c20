//! CPU profile API semantics (Go's): one profile at a time with Go's error message, stop as
//! a no-op when idle, the guard, the rate rules; and `go tool pprof` reading the result,
//! splitting it by the `thread` label.

mod common;

use common::SharedBuf;

use std::hint::black_box;
use std::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::new(());

#[derive(Debug)]
struct Failing;

impl std::io::Write for Failing {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("disk full"))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn thread_cpu_ms() -> i64 {
    common::thread_cpu_nanos() / 1_000_000
}

#[inline(never)]
fn hot_loop_alpha(cpu_ms: i64) -> u64 {
    let end = thread_cpu_ms() + cpu_ms;
    let mut x = 1u64;
    while thread_cpu_ms() < end {
        for i in 0..100_000u64 {
            x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
    }
    x
}

#[inline(never)]
fn hot_loop_beta(cpu_ms: i64) -> u64 {
    hot_loop_alpha(black_box(cpu_ms)) ^ 7
}

#[test]
fn second_start_fails_with_go_message_and_writes_nothing() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        heaprof::stop_cpu_profile_result().is_none(),
        "idle stop is a no-op"
    );
    heaprof::stop_cpu_profile();
    let first = SharedBuf::default();
    heaprof::start_cpu_profile(first.clone()).unwrap();
    let second = SharedBuf::default();
    let e = heaprof::start_cpu_profile(second.clone()).unwrap_err();
    assert!(matches!(e, heaprof::Error::CpuProfileInUse));
    assert_eq!(e.to_string(), "cpu profiling already in use");
    assert!(heaprof::CpuProfile::start(SharedBuf::default()).is_err());
    // While running, the rate cannot change.
    let before = heaprof::cpu_profile_rate();
    heaprof::set_cpu_profile_rate(before + 1);
    assert_eq!(heaprof::cpu_profile_rate(), before);
    black_box(hot_loop_alpha(50));
    heaprof::stop_cpu_profile_result().unwrap().unwrap();
    assert!(second.0.lock().unwrap().is_empty());
    let p = common::decode(&first.0.lock().unwrap());
    assert_eq!(p.period, 1_000_000_000 / i64::from(before));
    assert!(heaprof::stop_cpu_profile_result().is_none());
}

#[test]
fn rate_is_clamped_and_zero_means_off() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    heaprof::set_cpu_profile_rate(0);
    assert_eq!(heaprof::cpu_profile_rate(), 0);
    let e = heaprof::start_cpu_profile(SharedBuf::default()).unwrap_err();
    assert!(matches!(e, heaprof::Error::InvalidConfig(_)), "{e}");
    heaprof::set_cpu_profile_rate(u32::MAX);
    assert_eq!(heaprof::cpu_profile_rate(), heaprof::MAX_CPU_PROFILE_RATE);
    assert_eq!(heaprof::MAX_CPU_PROFILE_RATE, 1_000_000);
    heaprof::set_cpu_profile_rate(heaprof::DEFAULT_CPU_PROFILE_RATE);
    assert_eq!(heaprof::cpu_profile_rate(), 100);
}

/// Samples in a decoded CPU profile (the `samples/count` values).
fn sample_count(bytes: &[u8]) -> i64 {
    common::decode(bytes)
        .sample
        .iter()
        .map(|s| s.value[0])
        .sum()
}

#[test]
fn stop_gives_back_the_writer() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prof = heaprof::CpuProfile::start(Vec::new()).unwrap();
    assert!(format!("{prof:?}").contains("Vec<u8>"), "{prof:?}");
    black_box(hot_loop_alpha(100));
    let bytes: Vec<u8> = prof.stop().unwrap();
    assert!(sample_count(&bytes) > 0, "no samples in 100 ms of CPU time");
    // A writer with state of its own comes back as it was left: flushed, not dropped.
    let file = std::io::BufWriter::new(tempfile_in_scratch("cpu_api_writer.pb.gz"));
    let prof = heaprof::CpuProfile::start(file).unwrap();
    black_box(hot_loop_alpha(20));
    let file = prof.stop().unwrap();
    assert!(file.buffer().is_empty(), "flushed at stop");
    let len = file.get_ref().metadata().unwrap().len();
    assert!(len > 0, "the profile is in the file");
}

fn tempfile_in_scratch(name: &str) -> std::fs::File {
    std::fs::File::create(common::scratch(name)).unwrap()
}

#[test]
fn stopped_by_stop_cpu_profile_the_writer_and_error_wait_for_the_owner() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let prof = heaprof::CpuProfile::start(Vec::new()).unwrap();
    black_box(hot_loop_alpha(50));
    assert!(matches!(heaprof::stop_cpu_profile_result(), Some(Ok(()))));
    assert!(heaprof::stop_cpu_profile_result().is_none(), "stopped");
    assert!(sample_count(&prof.stop().unwrap()) > 0);
    // The owner gets the error itself; `stop_cpu_profile_result` a copy of it.
    let prof = heaprof::CpuProfile::start(Failing).unwrap();
    let copy = heaprof::stop_cpu_profile_result().unwrap().unwrap_err();
    assert_eq!(copy.to_string(), "disk full");
    assert_eq!(prof.stop().unwrap_err().to_string(), "disk full");
}

#[test]
fn a_profile_running_at_fork_stays_with_the_parent() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut running = Some(heaprof::CpuProfile::start(Vec::new()).unwrap());
    let code = heaprof::__private::in_child(std::time::Duration::from_secs(20), || {
        let e = running.take().unwrap().stop().unwrap_err();
        if !e.to_string().contains("forked") {
            return 2;
        }
        // The child can run a profile of its own.
        let own = heaprof::CpuProfile::start(Vec::new()).unwrap();
        black_box(hot_loop_alpha(20));
        match own.stop() {
            Ok(bytes) if !bytes.is_empty() => 0,
            _ => 3,
        }
    });
    assert_eq!(
        code,
        Some(0),
        "the child failed (101: a panic; None: a hang)"
    );
    black_box(hot_loop_alpha(20));
    let bytes = running.take().unwrap().stop().unwrap();
    common::decode(&bytes);
}

#[test]
fn guard_stops_on_drop_and_reports_write_errors() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let sink = SharedBuf::default();
    {
        let _g = heaprof::CpuProfile::start(sink.clone()).unwrap();
        black_box(hot_loop_alpha(30));
    }
    assert!(!sink.0.lock().unwrap().is_empty(), "written at drop");
    assert!(heaprof::stop_cpu_profile_result().is_none());
    // A stale guard does not stop a newer profile.
    let g = heaprof::CpuProfile::start(SharedBuf::default()).unwrap();
    heaprof::stop_cpu_profile();
    let newer = SharedBuf::default();
    heaprof::start_cpu_profile(newer.clone()).unwrap();
    g.stop().unwrap();
    assert!(newer.0.lock().unwrap().is_empty(), "still running");
    heaprof::stop_cpu_profile_result().unwrap().unwrap();
    assert!(!newer.0.lock().unwrap().is_empty());
    // The writer's error comes back.
    let g = heaprof::CpuProfile::start(Failing).unwrap();
    let e = g.stop().unwrap_err();
    assert_eq!(e.to_string(), "disk full");
}

#[test]
fn go_tool_pprof_names_hot_functions_and_splits_by_thread() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    heaprof::set_cpu_profile_rate(200);
    let sink = SharedBuf::default();
    heaprof::start_cpu_profile(sink.clone()).unwrap();
    let t = std::thread::Builder::new()
        .name("beta-worker".into())
        .spawn(|| black_box(hot_loop_beta(400)))
        .unwrap();
    black_box(hot_loop_alpha(400));
    t.join().unwrap();
    heaprof::stop_cpu_profile();
    heaprof::set_cpu_profile_rate(100);
    let path = common::write_scratch("cpu_api.pb.gz", &sink.0.lock().unwrap());
    let Some(top) = common::go_pprof(&["-top", &path]) else {
        return;
    };
    assert!(top.contains("Type: cpu"), "{top}");
    assert!(top.contains("hot_loop_alpha"), "{top}");
    let beta =
        common::go_pprof(&["-top", "-cum", "-tagfocus", "thread=beta-worker", &path]).unwrap();
    assert!(beta.contains("hot_loop_beta"), "{beta}");
    let main_only =
        common::go_pprof(&["-top", "-cum", "-tagignore", "thread=beta-worker", &path]).unwrap();
    assert!(!main_only.contains("hot_loop_beta"), "{main_only}");
    assert!(main_only.contains("hot_loop_alpha"), "{main_only}");
}
