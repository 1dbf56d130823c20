//! ns per span enter + exit with `heaprof::tracing::LabelLayer` against the same subscriber
//! without it (a `tracing_subscriber::Registry`), in the same run: the price of span labels
//! on a service's hot path.
//!
//! ```text
//! cargo run -p alloc-bench --release --bin span_bench [iterations]
//! ```
//!
//! Three cases, each entered and exited `iterations` times per round, the two subscribers
//! alternated round by round (so drifting machine load hits both alike): a span with two
//! fields entered alone (`alone`); an inner span entered inside its entered parent
//! (`nested`, only the inner enter + exit timed); the same span entered under labels put in
//! force by `Labels::enter` (`merged`: the layer merges the two sets, a cached lookup).
//! Prints the median over rounds of ns per enter + exit for each, the median of the
//! per-round ratios, and the ns the layer adds; no assertion (timings are noisy).

use std::hint::black_box;
use std::time::Instant;

use tracing::{dispatcher, Dispatch, Span};
use tracing_subscriber::layer::SubscriberExt;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

const ROUNDS: usize = 15;
const CASES: [&str; 3] = ["alone", "nested", "merged"];

/// Spans made under one subscriber (a span keeps the dispatcher it was made in).
struct Spans {
    outer: Span,
    inner: Span,
    job: heaprof::Labels,
}

impl Spans {
    fn new(d: &Dispatch) -> Spans {
        dispatcher::with_default(d, || {
            let outer = tracing::info_span!("request", tenant = "acme", route = "/checkout");
            let inner = outer.in_scope(|| tracing::info_span!("db", table = "orders"));
            Spans {
                outer,
                inner,
                job: heaprof::Labels::new(&[("job", "bench")]),
            }
        })
    }

    /// ns per enter + exit of case `case`, over `n` iterations.
    #[inline(never)]
    fn time(&self, case: &str, n: u64) -> f64 {
        let t = Instant::now();
        match case {
            "alone" => {
                for _ in 0..n {
                    let _e = black_box(&self.outer).enter();
                }
            }
            "nested" => {
                let _o = self.outer.enter();
                for _ in 0..n {
                    let _e = black_box(&self.inner).enter();
                }
            }
            "merged" => {
                let _j = self.job.enter();
                for _ in 0..n {
                    let _e = black_box(&self.outer).enter();
                }
            }
            _ => unreachable!(),
        }
        t.elapsed().as_nanos() as f64 / n as f64
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("iterations: a number"))
        .unwrap_or(1_000_000);
    let without = Dispatch::new(tracing_subscriber::registry());
    let with =
        Dispatch::new(tracing_subscriber::registry().with(heaprof::tracing::LabelLayer::default()));
    let spans = [Spans::new(&without), Spans::new(&with)];
    // Warm up: the sets are interned, the thread's stacks grown.
    for s in &spans {
        for case in CASES {
            s.time(case, n / 10);
        }
    }
    // ns[case][subscriber][round]
    let mut ns = vec![[Vec::new(), Vec::new()]; CASES.len()];
    for round in 0..ROUNDS {
        for (c, case) in CASES.iter().enumerate() {
            for k in 0..2 {
                let k = (k + round) % 2; // alternate which goes first
                ns[c][k].push(spans[k].time(case, n));
            }
        }
    }
    println!(
        "span enter + exit, 1 thread, {n} iterations x {ROUNDS} rounds (median), Registry \
         without and with heaprof::tracing::LabelLayer:"
    );
    println!(
        "  {:<8} {:>10} {:>10} {:>10} {:>8}",
        "case", "without", "with", "added", "ratio"
    );
    for (c, case) in CASES.iter().enumerate() {
        let [a, b] = &ns[c];
        let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| b / a).collect();
        let (ma, mb) = (median(a.clone()), median(b.clone()));
        println!(
            "  {case:<8} {ma:>8.1}ns {mb:>8.1}ns {:>+8.1}ns {:>8.2}",
            mb - ma,
            median(ratios)
        );
    }
}
