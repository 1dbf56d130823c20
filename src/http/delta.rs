//! `/debug/pprof/NAME?seconds=N`: Go's `serveDeltaProfile`. The profile is written now and
//! again N seconds later, and the answer is the difference ([`crate::profile_delta`]).
//!
//! Called on the request's own thread; the wait goes through the request's
//! [`Waiter`](super::Waiter), so a server can end it when the client hangs up or the server
//! stops.

use std::time::Duration;

use super::{binary, go_atoi, Ctx, Response};
use crate::profile::Profile;

/// The URL names Go serves deltas for (`profileSupportsDelta`), plus `threads`, heaprof's
/// own name for `goroutine`.
const DELTA_PROFILES: &[&str] = &[
    "allocs",
    "block",
    "goroutine",
    "heap",
    "mutex",
    "threadcreate",
    "threads",
];

/// Go's checks, in Go's order, then the two snapshots and their difference.
pub(super) fn serve(p: &Profile, name: &str, seconds: &str, ctx: &Ctx) -> Response {
    let Some(sec) = seconds.parse::<i64>().ok().filter(|&s| s > 0) else {
        return Response::error(
            400,
            r#"invalid value for "seconds" - must be a positive integer"#,
        );
    };
    if !DELTA_PROFILES.contains(&name) {
        return Response::error(
            400,
            r#""seconds" parameter is not supported for this profile type"#,
        );
    }
    if ctx.exceeds_write_timeout(sec as f64) {
        return Response::error(400, "profile duration exceeds server's WriteTimeout");
    }
    if ctx.query.get("debug").map_or(0, go_atoi) != 0 {
        return Response::error(400, "seconds and debug params are incompatible");
    }
    let Some(before) = collect(p) else {
        return Response::error(500, "failed to collect profile");
    };
    if !ctx.waiter.wait(Duration::from_secs(sec as u64)) {
        // Go answers its context's error; the client is gone or the server stopping.
        return Response::error(500, "context canceled");
    }
    let Some(after) = collect(p) else {
        return Response::error(500, "failed to collect profile");
    };
    match crate::profile_delta(&before, &after) {
        Ok(body) => binary(body, &format!("{name}-delta")),
        Err(_) => Response::error(500, "failed to compute delta"),
    }
}

/// The profile as `debug = 0` bytes (its `time_nanos` is the moment it was taken).
fn collect(p: &Profile) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    p.write_to(&mut buf, 0).ok().map(|()| buf)
}
