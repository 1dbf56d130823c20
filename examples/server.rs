//! A small long-running service with heaprof's production features on: it allocates
//! continuously on two threads, serves `/debug/pprof` over HTTP (built with `--features
//! http`) and writes a heap profile on every `SIGUSR1`.
//!
//! ```text
//! cargo run --release --features http --example server -- 127.0.0.1:6060
//! go tool pprof -top http://127.0.0.1:6060/debug/pprof/heap
//! kill -USR1 <pid>        # writes ./server.<pid>.<seq>.heap.pb.gz
//! ```
//!
//! Arguments: `[ADDR] [--seconds N] [--until-eof]`: listen address (default
//! `127.0.0.1:6060`; port 0 picks a free port); exit after N seconds, or when standard
//! input is closed (default: run until killed). Before exiting it waits for pending dumps
//! and prints a `heaprof-server stats …` line on stdout. Dumps go to
//! `$HEAPROF_DUMP_DIR` (default: the working directory); every `HEAPROF_*` variable of
//! `heaprof::init_from_env` applies. The first line on stdout says where everything is:
//! `heaprof-server pid=<pid> http=<addr|off> dump_dir=<dir>`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

/// A session cache: small strings kept for a while (in use), the oldest evicted.
#[inline(never)]
fn grow_session_cache(cache: &mut VecDeque<String>, round: u64) {
    for i in 0..256 {
        cache.push_back(format!("session-{round:010}-{i:04}@example.com"));
    }
    while cache.len() > 50_000 {
        cache.pop_front();
    }
    black_box(&cache);
}

/// Request handling: buffers allocated and freed per request (allocated, not in use).
#[inline(never)]
fn handle_request(round: u64) -> u64 {
    let len = 4096 + (round % 16) as usize * 1024;
    let body = vec![(round % 251) as u8; len];
    let sum = body.iter().map(|&b| b as u64).sum::<u64>();
    black_box(body);
    sum
}

struct Args {
    addr: String,
    seconds: Option<u64>,
    until_eof: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:6060".into(),
        seconds: None,
        until_eof: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--seconds" {
            let v = it.next().ok_or("--seconds needs a value")?;
            args.seconds = Some(
                v.parse()
                    .map_err(|_| format!("--seconds {v:?}: not a number"))?,
            );
        } else if a == "--until-eof" {
            args.until_eof = true;
        } else if a.starts_with('-') {
            return Err(format!(
                "unknown option {a:?}; usage: server [ADDR] [--seconds N] [--until-eof]"
            ));
        } else {
            args.addr = a;
        }
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    // HEAPROF_DUMP_SIGNAL, HEAPROF_DUMP_AT_EXIT, …: see the README's table.
    let env = heaprof::init_from_env();
    // Without HEAPROF_DUMP_SIGNAL this example still dumps on SIGUSR1.
    let dump = match env.dump {
        Some(d) => d,
        None => heaprof::dump_on_signal(heaprof::DumpConfig {
            dir: std::env::var_os("HEAPROF_DUMP_DIR")
                .map(Into::into)
                .unwrap_or_else(|| ".".into()),
            ..Default::default()
        })?,
    };

    #[cfg(feature = "http")]
    let server = Some(heaprof::http::serve(args.addr.as_str())?);
    #[cfg(feature = "http")]
    let http = server.as_ref().map(|s| s.local_addr().to_string());
    #[cfg(not(feature = "http"))]
    let http: Option<String> = {
        let _ = &args.addr;
        None
    };

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = [0u8, 1]
        .into_iter()
        .map(|kind| {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("worker-{kind}"))
                .spawn(move || {
                    let mut cache = VecDeque::new();
                    let mut round = 0u64;
                    let mut sum = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        round += 1;
                        if kind == 0 {
                            grow_session_cache(&mut cache, round);
                        } else {
                            for r in 0..64 {
                                sum = sum.wrapping_add(handle_request(round * 64 + r));
                            }
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    black_box(sum);
                })
        })
        .collect::<Result<_, _>>()?;

    println!(
        "heaprof-server pid={} http={} dump_dir={}",
        std::process::id(),
        http.as_deref().unwrap_or("off"),
        dump.dir().display()
    );
    std::io::stdout().flush()?;

    if args.until_eof {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            // Errors count as end of input: the test harness (or operator) has gone.
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            stop.store(true, Ordering::Relaxed);
        });
    }
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        if args
            .seconds
            .is_some_and(|s| start.elapsed() >= Duration::from_secs(s))
        {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().map_err(|_| "worker panicked")?;
    }
    #[cfg(feature = "http")]
    if let Some(s) = server {
        s.stop();
    }
    // Let the dump thread serve signals that are still pending (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(120);
    while dump.stats().signals_pending() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = dump.stats();
    println!(
        "heaprof-server stats signals_received={} signals_served={} dumps={} dumps_finished={} \
         files_written={} write_errors={} coalesced={}",
        s.signals_received,
        s.signals_served,
        s.dumps,
        s.dumps_finished,
        s.files_written,
        s.write_errors,
        s.signals_coalesced()
    );
    Ok(())
}
