//! The tokio workload of the tenant tests (`tracing_tenants.rs` labels each task through a
//! `tracing` span and the layer, `labeled_tenants.rs` through `heaprof::Labeled`): tasks of
//! tenants `a` and `b` on a 4-worker runtime allocate known amounts at rate 1, yielding
//! between allocations (woken from outside the runtime, so that they move between
//! workers), and the heap profile split by `-tagfocus tenant=…` must show exactly each
//! tenant's bytes, in use and allocated.
#![allow(dead_code)]

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::mpsc::{self, Sender};
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;

use crate::common;

/// A tenant task, boxed so that each test can wrap it its own way.
pub type Task = Pin<Box<dyn Future<Output = Done> + Send>>;

/// What a task hands back: the blocks it keeps (in use until the profile is written) and
/// the worker threads that polled it.
pub struct Done {
    kept: Vec<Vec<u8>>,
    threads: Vec<ThreadId>,
}

/// A tenant: its label value, block size and number of tasks. Sizes and counts differ so
/// that no mix-up of labels can sum to the right totals.
pub struct Tenant {
    pub name: &'static str,
    pub block: usize,
    pub tasks: usize,
}

pub const TENANTS: [Tenant; 2] = [
    Tenant {
        name: "a",
        block: 3000,
        tasks: 6,
    },
    Tenant {
        name: "b",
        block: 1000,
        tasks: 4,
    },
];

/// Allocations per task; every other one is kept, the rest freed at once.
pub const ROUNDS: usize = 40;
pub const WORKERS: usize = 4;

impl Tenant {
    /// Bytes all its tasks allocated at `alloc_block`.
    pub fn allocated(&self) -> i64 {
        (self.tasks * ROUNDS * self.block) as i64
    }

    /// Bytes its tasks still hold (the even rounds).
    pub fn in_use(&self) -> i64 {
        (self.tasks * ROUNDS.div_ceil(2) * self.block) as i64
    }
}

/// The one place the tenants' blocks come from, so that `-focus=alloc_block` leaves out
/// whatever else runs under a label (the runtime's own allocations while a task is polled).
#[inline(never)]
pub fn alloc_block(size: usize) -> Vec<u8> {
    black_box(vec![7u8; size])
}

async fn tenant_work(block: usize) -> Done {
    let mut done = Done {
        kept: Vec::with_capacity(ROUNDS),
        threads: Vec::with_capacity(ROUNDS),
    };
    for i in 0..ROUNDS {
        done.threads.push(std::thread::current().id());
        let b = alloc_block(block);
        if i % 2 == 0 {
            done.kept.push(b);
        }
        hop().await;
    }
    done
}

/// Yields, to be woken by a thread outside the runtime: the task goes to the runtime's
/// shared queue, and its next poll is on whichever worker takes it. (`yield_now` keeps the
/// task on its worker in some tokio versions, where no task would ever move.)
pub async fn hop() {
    struct Hop(bool);
    impl Future for Hop {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            waker_thread().send(cx.waker().clone()).unwrap();
            Poll::Pending
        }
    }
    Hop(false).await
}

/// The thread that wakes hopping tasks, started on first use.
fn waker_thread() -> &'static Sender<Waker> {
    static WAKE: OnceLock<Sender<Waker>> = OnceLock::new();
    WAKE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Waker>();
        std::thread::spawn(move || rx.into_iter().for_each(Waker::wake));
        tx
    })
}

/// Runs every tenant's tasks, each wrapped by `label(tenant name, task)`, on a `WORKERS`-
/// thread runtime at heap profile rate 1, and returns the heap profile written while the
/// kept blocks are still held.
pub fn run(label: impl Fn(&'static str, Task) -> Task) -> Vec<u8> {
    heaprof::set_heap_profile_rate(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .build()
        .unwrap();
    let handles: Vec<_> = TENANTS
        .iter()
        .flat_map(|t| (0..t.tasks).map(move |_| t))
        .map(|t| rt.spawn(label(t.name, Box::pin(tenant_work(t.block)))))
        .collect();
    let done: Vec<Done> = handles
        .into_iter()
        .map(|h| rt.block_on(h).unwrap())
        .collect();
    let moved = done
        .iter()
        .filter(|d| d.threads.iter().any(|t| *t != d.threads[0]))
        .count();
    eprintln!(
        "{moved} of {} tasks were polled on more than one worker",
        done.len()
    );
    assert!(
        moved > 0,
        "no task moved between workers: the test shows nothing"
    );
    let mut out = Vec::new();
    heaprof::write_heap_profile(&mut out).unwrap();
    drop(done);
    drop(rt);
    out
}

/// Checks the profile: summed per `tenant` label in-process, then through
/// `go tool pprof -tagfocus=tenant=NAME -focus=alloc_block` for in-use and allocated bytes.
pub fn check(profile: &[u8], file_name: &str) {
    let p = common::decode(profile);
    let s = |i: i64| p.string_table[i as usize].as_str();
    let mut by = std::collections::HashMap::<String, (i64, i64)>::new();
    for sample in &p.sample {
        if !common::stack_names(&p, sample)
            .iter()
            .any(|n| n.contains("alloc_block"))
        {
            continue;
        }
        let tenant = sample
            .label
            .iter()
            .find(|l| s(l.key) == "tenant")
            .map_or("", |l| s(l.str));
        let e = by.entry(tenant.to_string()).or_default();
        e.0 += sample.value[3];
        e.1 += sample.value[1];
    }
    for t in &TENANTS {
        assert_eq!(
            by.get(t.name),
            Some(&(t.in_use(), t.allocated())),
            "tenant {}: (in use, allocated); all: {by:?}",
            t.name
        );
    }
    assert_eq!(by.len(), TENANTS.len(), "unlabelled blocks: {by:?}");

    let f = common::write_scratch(file_name, profile);
    for t in &TENANTS {
        for (index, want) in [("inuse_space", t.in_use()), ("alloc_space", t.allocated())] {
            let tagfocus = format!("-tagfocus=tenant={}", t.name);
            let index = format!("-sample_index={index}");
            let args = [
                "-top",
                "-unit=B",
                "-nodecount=1000",
                "-nodefraction=0",
                &index,
                &tagfocus,
                "-focus=alloc_block",
                &f,
            ];
            let Some(top) = common::go_pprof(&args) else {
                return;
            };
            assert_eq!(shown_bytes(&top), Some(want), "{args:?}:\n{top}");
        }
    }
}

/// The bytes `go tool pprof -top` accounts for: `Showing nodes accounting for 123000B, …`.
fn shown_bytes(top: &str) -> Option<i64> {
    let line = top
        .lines()
        .find(|l| l.contains("Showing nodes accounting for"))?;
    let v = line.split("accounting for ").nth(1)?.split(',').next()?;
    v.trim().trim_end_matches('B').parse().ok()
}
