//! Helpers shared by the integration tests: decode a written profile, total it per site,
//! and run the reference reader (`go tool pprof`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use heaprof::__private::proto;
use prost::Message;

/// Decodes a gzip-compressed (or raw) pprof protobuf.
pub fn decode(bytes: &[u8]) -> proto::Profile {
    let mut raw = Vec::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .expect("gzip");
    } else {
        raw.extend_from_slice(bytes);
    }
    proto::Profile::decode(raw.as_slice()).expect("profile.proto")
}

/// Every function name on a sample's stack, leaf first (inlined frames included).
pub fn stack_names(p: &proto::Profile, s: &proto::Sample) -> Vec<String> {
    let locs: HashMap<u64, &proto::Location> = p.location.iter().map(|l| (l.id, l)).collect();
    let funcs: HashMap<u64, &proto::Function> = p.function.iter().map(|f| (f.id, f)).collect();
    let mut out = Vec::new();
    for id in &s.location_id {
        for line in &locs[id].line {
            out.push(p.string_table[funcs[&line.function_id].name as usize].clone());
        }
    }
    out
}

/// The name of the sample type at `index`.
pub fn sample_type(p: &proto::Profile, index: usize) -> String {
    p.string_table[p.sample_type[index].r#type as usize].clone()
}

/// Sums each sample's values into the first of `sites` that appears (as a substring of a
/// function name) on its stack. Samples on no site are summed under `""`.
pub fn totals_by_site(p: &proto::Profile, sites: &[&str]) -> HashMap<String, Vec<i64>> {
    let mut out: HashMap<String, Vec<i64>> = HashMap::new();
    for s in &p.sample {
        let names = stack_names(p, s);
        let site = sites
            .iter()
            .find(|site| names.iter().any(|n| n.contains(*site)))
            .copied()
            .unwrap_or("");
        let e = out
            .entry(site.to_string())
            .or_insert_with(|| vec![0; s.value.len()]);
        for (t, v) in e.iter_mut().zip(&s.value) {
            *t += v;
        }
    }
    out
}

/// The top (leaf) function of every sample.
pub fn top_names(p: &proto::Profile) -> Vec<String> {
    p.sample
        .iter()
        .filter_map(|s| stack_names(p, s).into_iter().next())
        .collect()
}

/// Runs `go tool pprof ARGS`. `None` (after printing why) when Go is not installed and we
/// are not in CI; in CI a missing Go fails the test.
pub fn go_pprof(args: &[&str]) -> Option<String> {
    let go = go_binary()?;
    let home = std::env::temp_dir().join("heaprof-go-home");
    let out = Command::new(go)
        .arg("tool")
        .arg("pprof")
        .args(args)
        .env("HOME", &home)
        .env("GOCACHE", home.join("cache"))
        .env("PPROF_TMPDIR", &home)
        .output()
        .expect("run go tool pprof");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed:\n{text}"
    );
    Some(text)
}

/// The `go` command. `None` (after printing why) when Go is not installed and we are not in
/// CI; in CI a missing Go fails the test.
pub fn go_binary() -> Option<&'static str> {
    let go = ["go", "/usr/lib/go/bin/go", "/usr/bin/go"]
        .into_iter()
        .find(|g| {
            Command::new(g)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if go.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "go is required in CI (Debian package golang-go)"
        );
        eprintln!("skipping the Go check: go is not installed");
    }
    go
}

/// A scratch file path unique to this test process.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("heaprof-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Writes bytes to a scratch file and returns its path as a string.
pub fn write_scratch(name: &str, bytes: &[u8]) -> String {
    let p = scratch(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

/// Whether `path` exists (for skip messages).
pub fn exists(path: &str) -> bool {
    Path::new(path).exists()
}

/// A writer the CPU profiler can keep until stop, read back afterwards.
#[derive(Clone, Default)]
pub struct SharedBuf(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuf {
    /// The bytes written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// CPU time the calling thread has used, in nanoseconds (CLOCK_THREAD_CPUTIME_ID).
pub fn thread_cpu_nanos() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer, CLOCK_THREAD_CPUTIME_ID always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// The profile's comments (`heaprof.… : value` lines), as (key, value) pairs.
pub fn comments(p: &proto::Profile) -> HashMap<String, String> {
    p.comment
        .iter()
        .filter_map(|&i| {
            let line = &p.string_table[i as usize];
            let (k, v) = line.split_once(": ")?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// The sum of the values of sample type `name` (e.g. `inuse_space`).
pub fn total_of(p: &proto::Profile, name: &str) -> i64 {
    let i = (0..p.sample_type.len())
        .find(|&i| sample_type(p, i) == name)
        .unwrap_or_else(|| panic!("no sample type {name}"));
    p.sample.iter().map(|s| s.value[i]).sum()
}
