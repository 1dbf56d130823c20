//! The `/debug/pprof` server: one poll thread that accepts connections and reads requests
//! without a thread per connection, and one short-lived thread per request being answered.
//!
//! A profiling endpoint must never hurt the service it watches, so everything it holds is
//! bounded ([`ServerConfig`]): requests answered at once (a thread each; more get 503),
//! connections still sending their request (the oldest is closed to make room for a new
//! one, so a flood of half-sent requests cannot lock out a real client), the time a client
//! has to send its request, and the size of the request. Called by the application
//! ([`serve`]); the threads run under the profiler guard (their allocations are not
//! sampled).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::conn::{response_bytes, Incoming, Limits, Parsed, Step};
use super::{handle_with, Request, Response, Waiter};
use crate::base::error::Error;
use crate::base::tls;

/// The server's bounds. `ServerConfig::default()` is what [`serve`] uses.
///
/// ```
/// let config = heaprof::http::ServerConfig { max_requests: 8, ..Default::default() };
/// assert_eq!(config.max_pending, 128);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Requests answered at the same time, each on a thread of its own (a `seconds=N`
    /// request holds its thread for N seconds). A complete request beyond this gets `503`.
    /// Default 64.
    pub max_requests: usize,
    /// Connections whose request has not fully arrived yet, held without a thread by the
    /// server's poll thread. When a new connection arrives with this many held, the oldest
    /// is closed. Default 128.
    pub max_pending: usize,
    /// Time a client has, from connecting, to send its whole request (head and body); it is
    /// then closed. Also the longest a write of the answer may stall. Default 5 s.
    pub request_timeout: Duration,
    /// Largest request head (request line and headers), bytes; larger gets `431`. Default 8 KiB.
    pub max_head: usize,
    /// Largest request body, bytes (only `POST /debug/pprof/symbol` reads one: a list of
    /// addresses, about 15 bytes each); larger gets `413` before the body is read. Default
    /// 64 KiB.
    pub max_body: usize,
    /// Go's `http.Server.WriteTimeout`: if set, a `seconds=N` at or past it is refused with
    /// `400 profile duration exceeds server's WriteTimeout`, and an answer not written
    /// within it after its request arrived is cut off. Default none.
    pub write_timeout: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_requests: 64,
            max_pending: 128,
            request_timeout: Duration::from_secs(5),
            max_head: 8 << 10,
            max_body: 64 << 10,
            write_timeout: None,
        }
    }
}

impl ServerConfig {
    fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::InvalidConfig(format!("http::ServerConfig: {m}")));
        if self.max_requests == 0 || self.max_pending == 0 {
            return bad("max_requests and max_pending must be at least 1");
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be more than 0");
        }
        if self.max_head < 256 {
            return bad("max_head must be at least 256 bytes");
        }
        Ok(())
    }
}

/// What the server has done so far ([`ServerHandle::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Requests answered by a request thread.
    pub answered: u64,
    /// Complete requests refused with 503 because `max_requests` were being answered.
    pub busy: u64,
    /// Requests refused for their size or form (413, 431, 400, 411).
    pub refused: u64,
    /// Connections closed for not sending their request within `request_timeout`.
    pub timed_out: u64,
    /// Connections closed to make room for a newer one (`max_pending`).
    pub evicted: u64,
    /// Requests being answered now.
    pub active: usize,
    /// Of those, requests waiting out their `seconds=N` (a delta between its two snapshots, a
    /// CPU profile while it records).
    pub waiting: usize,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    answered: AtomicU64,
    busy: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
    evicted: AtomicU64,
}

/// State shared by the poll thread, the request threads and the handle.
struct Shared {
    config: ServerConfig,
    stop: AtomicBool,
    active: AtomicUsize,
    waiting: AtomicUsize,
    counts: Counters,
}

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A running `/debug/pprof` server. Dropping the handle leaves the server running;
/// [`ServerHandle::stop`] ends it.
pub struct ServerHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.addr)
            .field("config", &self.shared.config)
            .finish()
    }
}

impl ServerHandle {
    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counts of what the server has done.
    pub fn stats(&self) -> ServerStats {
        let c = &self.shared.counts;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            accepted: l(&c.accepted),
            answered: l(&c.answered),
            busy: l(&c.busy),
            refused: l(&c.refused),
            timed_out: l(&c.timed_out),
            evicted: l(&c.evicted),
            active: self.shared.active.load(Ordering::Relaxed),
            waiting: self.shared.waiting.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting, closes the connections still sending requests and waits for the poll
    /// thread to end. Requests being answered finish on their own threads; those waiting
    /// (`seconds=N`) end their wait early.
    pub fn stop(mut self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.wake.write(&[1]);
        if let Some(t) = self.thread.take() {
            // A panic on the poll thread has been printed already; nothing to add.
            let _ = t.join();
        }
    }
}

/// Serves [`super::handle_request`] over HTTP/1.1 at `addr` (e.g. [`super::DEFAULT_ADDR`],
/// or `"127.0.0.1:0"` for a free port) with [`ServerConfig::default`]: at most 64 requests
/// answered at once (then `503`), 128 connections still sending, 5 s to send a request,
/// bodies up to 64 KiB. Bind to loopback unless the network is trusted: profiles reveal code
/// structure and allocation sizes.
///
/// ```no_run
/// let server = heaprof::http::serve(heaprof::http::DEFAULT_ADDR)?;
/// eprintln!("go tool pprof http://{}/debug/pprof/heap", server.local_addr());
/// # Ok::<(), heaprof::Error>(())
/// ```
pub fn serve(addr: impl ToSocketAddrs + std::fmt::Debug) -> Result<ServerHandle, Error> {
    serve_with(addr, ServerConfig::default())
}

/// [`serve`] with other bounds.
pub fn serve_with(
    addr: impl ToSocketAddrs + std::fmt::Debug,
    config: ServerConfig,
) -> Result<ServerHandle, Error> {
    config.validate()?;
    let fail = |what: &str, e: io::Error| Error::os(what, e);
    let listener =
        TcpListener::bind(&addr).map_err(|e| fail(&format!("cannot listen on {addr:?}"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| fail(&format!("cannot listen on {addr:?}"), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| fail("cannot make the listener non-blocking", e))?;
    let (wake, wake_rx) = UnixStream::pair().map_err(|e| fail("cannot make a wake pipe", e))?;
    wake_rx
        .set_nonblocking(true)
        .map_err(|e| fail("cannot make the wake pipe non-blocking", e))?;
    let shared = Arc::new(Shared {
        config,
        stop: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        waiting: AtomicUsize::new(0),
        counts: Counters::default(),
    });
    let poll_shared = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("heaprof-http".into())
        .spawn(move || PollLoop::new(listener, wake_rx, poll_shared).run())
        .map_err(|e| fail("cannot start the HTTP thread", e))?;
    Ok(ServerHandle {
        addr: local,
        shared,
        wake,
        thread: Some(thread),
    })
}

/// The poll thread's state: the listener, the wake pipe, and the connections still sending
/// their request, oldest first.
struct PollLoop {
    listener: TcpListener,
    wake: UnixStream,
    shared: Arc<Shared>,
    pending: VecDeque<Incoming>,
    limits: Limits,
}

impl PollLoop {
    fn new(listener: TcpListener, wake: UnixStream, shared: Arc<Shared>) -> Self {
        let limits = Limits {
            max_head: shared.config.max_head,
            max_body: shared.config.max_body,
        };
        PollLoop {
            listener,
            wake,
            shared,
            pending: VecDeque::new(),
            limits,
        }
    }

    fn run(mut self) {
        let _guard = tls::ProfilerGuard::enter();
        let mut fds: Vec<libc::pollfd> = Vec::new();
        while !self.shared.stop.load(Ordering::Acquire) {
            self.expire();
            fds.clear();
            fds.push(pollfd(self.listener.as_raw_fd()));
            fds.push(pollfd(self.wake.as_raw_fd()));
            fds.extend(self.pending.iter().map(|c| pollfd(c.stream.as_raw_fd())));
            let timeout = self.next_deadline_ms();
            // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // poll cannot fail otherwise with valid arguments; do not spin if it does.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            if fds[1].revents != 0 {
                let mut b = [0u8; 64];
                while matches!(self.wake.read(&mut b), Ok(n) if n > 0) {}
            }
            // Back to front, so removing a connection keeps the indices of those before it.
            for i in (0..self.pending.len()).rev() {
                if fds[i + 2].revents != 0 {
                    self.on_readable(i);
                }
            }
            if fds[0].revents != 0 {
                self.accept_all();
            }
        }
    }

    /// Closes the connections past their deadline (counted first, so that a client that
    /// sees its connection close also sees the count).
    fn expire(&mut self) {
        let now = Instant::now();
        let timed_out = self
            .pending
            .iter()
            .filter(|c| c.deadline <= now && !c.is_draining())
            .count();
        self.shared
            .counts
            .timed_out
            .fetch_add(timed_out as u64, Ordering::Relaxed);
        self.pending.retain(|c| c.deadline > now);
    }

    /// Milliseconds until the earliest deadline (rounded up), or -1 (wait for input).
    fn next_deadline_ms(&self) -> i32 {
        let Some(d) = self.pending.iter().map(|c| c.deadline).min() else {
            return -1;
        };
        let left = d.saturating_duration_since(Instant::now());
        (left.as_millis() as i32).saturating_add(1).min(60_000)
    }

    fn accept_all(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // WouldBlock: all taken; anything else (EMFILE, ECONNABORTED): try again at
                // the next readiness rather than spin.
                Err(_) => return,
            };
            count(&self.shared.counts.accepted);
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            if self.pending.len() >= self.shared.config.max_pending {
                count(&self.shared.counts.evicted);
                self.pending.pop_front();
            }
            self.pending
                .push_back(Incoming::new(stream, self.shared.config.request_timeout));
            // A client usually sends its request with the connection: read it now.
            self.on_readable(self.pending.len() - 1);
        }
    }

    fn on_readable(&mut self, i: usize) {
        match self.pending[i].read(self.limits) {
            Step::More => {}
            Step::Gone => {
                self.pending.remove(i);
            }
            Step::Refuse(status, msg) => {
                count(&self.shared.counts.refused);
                if !self.pending[i].refuse(status, &msg) {
                    self.pending.remove(i);
                }
            }
            Step::Ready(req) => {
                if let Some(c) = self.pending.remove(i) {
                    self.dispatch(c.stream, req);
                }
            }
        }
    }

    /// Hands a complete request to a thread of its own, or answers 503 when `max_requests`
    /// are being answered.
    fn dispatch(&self, stream: TcpStream, req: Parsed) {
        let shared = &self.shared;
        if shared.active.fetch_add(1, Ordering::AcqRel) >= shared.config.max_requests {
            shared.active.fetch_sub(1, Ordering::AcqRel);
            count(&shared.counts.busy);
            refuse_now(stream, 503, "too many concurrent profile requests");
            return;
        }
        let arrived = Instant::now();
        let thread_shared = Arc::clone(shared);
        let mut spare = stream.try_clone().ok();
        let spawned = std::thread::Builder::new()
            .name("heaprof-http-req".into())
            .spawn(move || {
                let _guard = tls::ProfilerGuard::enter();
                let _active = ActiveGuard(&thread_shared);
                answer(stream, req, arrived, &thread_shared);
            });
        if spawned.is_err() {
            // The closure, with the stream, is gone; answer on the clone if there is one.
            shared.active.fetch_sub(1, Ordering::AcqRel);
            count(&shared.counts.busy);
            if let Some(s) = spare.take() {
                refuse_now(s, 503, "cannot start a thread for the request");
            }
        }
    }
}

/// Ends one active request (also when the handler panicked past `catch_unwind`).
struct ActiveGuard<'a>(&'a Shared);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

fn pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Answers a small error on a non-blocking stream, best effort, and closes it.
fn refuse_now(mut stream: TcpStream, status: u16, msg: &str) {
    let _ = stream.write(&response_bytes(&Response::error(status, msg), false));
    let _ = stream.shutdown(Shutdown::Write);
}

/// A request thread's work: handle, then write the answer within the limits.
fn answer(mut stream: TcpStream, req: Parsed, arrived: Instant, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let request = Request {
        method: &req.method,
        path_and_query: &req.target,
        body: &req.body,
        write_timeout: shared.config.write_timeout,
    };
    let waiter = ClientWaiter {
        stream: &stream,
        shared,
    };
    let r = handle_with(&request, &waiter);
    // Counted before the answer leaves, so a client that has it sees the count.
    count(&shared.counts.answered);
    let mut stall = shared.config.request_timeout;
    if let Some(wt) = shared.config.write_timeout {
        let left = (arrived + wt).saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        stall = stall.min(left);
    }
    let _ = stream.set_write_timeout(Some(stall));
    let head_only = req.method.eq_ignore_ascii_case("HEAD");
    let _ = stream.write_all(&response_bytes(&r, head_only));
    let _ = stream.shutdown(Shutdown::Write);
}

/// Waits for a request's `seconds`, ending early when the client hangs up or the server stops
/// (Go's request context).
struct ClientWaiter<'a> {
    stream: &'a TcpStream,
    shared: &'a Shared,
}

/// The poll event for "the peer closed its side".
#[cfg(any(target_os = "linux", target_os = "android"))]
const HANGUP: libc::c_short = libc::POLLRDHUP;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const HANGUP: libc::c_short = 0;

impl Waiter for ClientWaiter<'_> {
    fn wait(&self, d: Duration) -> bool {
        self.shared.waiting.fetch_add(1, Ordering::AcqRel);
        let done = self.wait_inner(d);
        self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
        done
    }
}

impl ClientWaiter<'_> {
    fn wait_inner(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                return false;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            // Wake at least every 250 ms to see a stop.
            let ms = left.min(Duration::from_millis(250)).as_millis() as i32 + 1;
            let mut fd = libc::pollfd {
                fd: self.stream.as_raw_fd(),
                events: HANGUP,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut fd, 1, ms) };
            if n > 0 && fd.revents & (HANGUP | libc::POLLHUP | libc::POLLERR) != 0 {
                return false;
            }
        }
    }
}
