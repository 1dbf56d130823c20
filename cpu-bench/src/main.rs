//! CPU-profiler overhead on a CPU-bound 2-thread workload: no profiler, heaprof and pprof-rs
//! (tikv/pprof-rs, `setitimer` + SIGPROF), all at 100 Hz, each run in a fresh child process,
//! modes alternated, median of N rounds. Reports process CPU time (robust on a shared
//! machine) and wall time of the workload between start and stop, the CPU of start + stop
//! (symbolization, encoding) apart, the ratio to the unprofiled median, the share of samples the
//! profiler put in the two hot functions, and heaprof's handler cost per sample.
//!
//! ```text
//! cargo run --release --manifest-path cpu-bench/Cargo.toml -- [rounds]
//! ```

use std::hint::black_box;
use std::io::Read;
use std::process::Command;
use std::time::Instant;

use prost::Message;

const HZ: i32 = 100;
/// Work units per thread; ~2.8 s of CPU per thread on the 2-core VM.
const UNITS: u64 = 30_000;

#[inline(never)]
fn hot_mix(units: u64) -> u64 {
    let mut x = 0x243f_6a88_85a3_08d3u64;
    for i in 0..units * 20_000 {
        x = black_box(x.rotate_left(7) ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    x
}

#[inline(never)]
fn hot_hash(units: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for i in 0..units * 20_000 {
        h = black_box(h ^ (i & 0xff)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn workload() {
    let a = std::thread::Builder::new()
        .name("work-a".into())
        .spawn(|| black_box(hot_mix(UNITS)))
        .unwrap();
    let b = std::thread::Builder::new()
        .name("work-b".into())
        .spawn(|| black_box(hot_hash(UNITS)))
        .unwrap();
    a.join().unwrap();
    b.join().unwrap();
}

fn process_cpu_ns() -> u64 {
    // SAFETY: zeroed rusage is valid; RUSAGE_SELF with a valid pointer cannot fail.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

const HOT: [&str; 2] = ["hot_mix", "hot_hash"];

fn heaprof_share(bytes: &[u8]) -> (i64, f64) {
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut raw)
        .unwrap();
    let p = heaprof::__private::proto::Profile::decode(raw.as_slice()).unwrap();
    let funcs: std::collections::HashMap<u64, &str> = p
        .function
        .iter()
        .map(|f| (f.id, p.string_table[f.name as usize].as_str()))
        .collect();
    let locs: std::collections::HashMap<u64, Vec<&str>> = p
        .location
        .iter()
        .map(|l| {
            (
                l.id,
                l.line.iter().map(|ln| funcs[&ln.function_id]).collect(),
            )
        })
        .collect();
    let (mut total, mut hot) = (0, 0);
    for s in &p.sample {
        total += s.value[0];
        let on_hot = s
            .location_id
            .iter()
            .flat_map(|id| &locs[id])
            .any(|n| HOT.iter().any(|h| n.contains(h)));
        if on_hot {
            hot += s.value[0];
        }
    }
    (total, hot as f64 / total.max(1) as f64)
}

/// Child: run one mode, print `cpu_ns wall_ns samples hot_share handler_ns_per_sample`.
fn child(mode: &str) {
    let c_begin = process_cpu_ns();
    // CPU and wall time of the workload alone, taken after the profiler started and before
    // it stops; the start + stop (symbolization, encoding) CPU is reported apart.
    let mut work = (0u64, 0u128);
    let mut timed = || {
        let (c0, t0) = (process_cpu_ns(), Instant::now());
        workload();
        work = (process_cpu_ns() - c0, t0.elapsed().as_nanos());
    };
    let (samples, share, per_sample) = match mode {
        "none" => {
            timed();
            (0, 0.0, 0)
        }
        "heaprof" => {
            heaprof::set_cpu_profile_rate(HZ as u32);
            let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            struct W(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
            impl std::io::Write for W {
                fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                    self.0.lock().unwrap().extend_from_slice(b);
                    Ok(b.len())
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    Ok(())
                }
            }
            heaprof::start_cpu_profile(W(buf.clone())).unwrap();
            timed();
            let (n, ns) = heaprof::__private::handler_stats();
            heaprof::stop_cpu_profile_result().unwrap().unwrap();
            let (total, share) = heaprof_share(&buf.lock().unwrap());
            (total, share, ns.checked_div(n).unwrap_or(0))
        }
        "pprof" => {
            let guard = pprof::ProfilerGuard::new(HZ).unwrap();
            timed();
            let report = guard.report().build().unwrap();
            let (mut total, mut hot) = (0isize, 0isize);
            for (frames, n) in &report.data {
                total += n;
                let on_hot = frames
                    .frames
                    .iter()
                    .flatten()
                    .any(|s| HOT.iter().any(|h| s.name().contains(h)));
                if on_hot {
                    hot += n;
                }
            }
            (total as i64, hot as f64 / total.max(1) as f64, 0)
        }
        m => panic!("unknown mode {m}"),
    };
    let fixed = process_cpu_ns() - c_begin - work.0;
    println!(
        "{} {} {samples} {share:.4} {per_sample} {fixed}",
        work.0, work.1
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--child" {
        return child(&args[2]);
    }
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(7);
    let modes = ["none", "heaprof", "pprof"];
    let mut res: Vec<Vec<[f64; 6]>> = vec![Vec::new(); modes.len()];
    for r in 0..rounds {
        for k in 0..modes.len() {
            // Rotate the order each round so drift hits every mode alike.
            let m = (k + r) % modes.len();
            let out = Command::new(&args[0])
                .args(["--child", modes[m]])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            res[m].push([v[0], v[1], v[2], v[3], v[4], v[5]]);
        }
        eprint!(".");
    }
    eprintln!();
    let col = |m: usize, i: usize| median(&mut res[m].iter().map(|r| r[i]).collect::<Vec<_>>());
    let (cpu0, wall0) = (col(0, 0), col(0, 1));
    println!("{rounds} rounds, 2 threads x ~{UNITS} units, {HZ} Hz; medians");
    println!(
        "{:<8} {:>9} {:>7} {:>9} {:>7} {:>8} {:>9} {:>11} {:>14}",
        "mode",
        "cpu s",
        "cpu x",
        "wall s",
        "wall x",
        "samples",
        "hot share",
        "handler ns",
        "start+stop ms"
    );
    for (m, name) in modes.iter().enumerate() {
        let (cpu, wall) = (col(m, 0), col(m, 1));
        println!(
            "{:<8} {:>9.3} {:>7.4} {:>9.3} {:>7.4} {:>8.0} {:>9.3} {:>11.0} {:>14.1}",
            name,
            cpu / 1e9,
            cpu / cpu0,
            wall / 1e9,
            wall / wall0,
            col(m, 2),
            col(m, 3),
            col(m, 4),
            col(m, 5) / 1e6
        );
    }
}
