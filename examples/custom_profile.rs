//! A custom profile that tracks open files: every `TrackedFile` is added to the
//! `custom_profile.open_files` profile when opened and removed when closed (dropped), so the
//! profile shows, per opening stack, how many files are open right now — the way Go programs
//! find file-descriptor leaks. At the end it prints the profile as Go's `debug=1` text and
//! writes `open_files.pb.gz`.
//!
//! ```text
//! cargo run --release --example custom_profile
//! go tool pprof -top open_files.pb.gz
//! ```

use std::fs::File;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

fn open_files() -> &'static heaprof::Profile {
    static P: OnceLock<heaprof::Profile> = OnceLock::new();
    P.get_or_init(|| heaprof::Profile::new("custom_profile.open_files"))
}

/// A file registered in the profile for as long as it is open. The key is the file
/// descriptor: unique among open files, reused only after close (when it was removed).
struct TrackedFile {
    file: File,
}

impl TrackedFile {
    /// Opens `path` and records the caller's stack (`skip = 1`: the stack starts at the
    /// function that called `open`, not at `open` itself).
    #[inline(never)]
    fn open(path: &Path) -> io::Result<TrackedFile> {
        let file = File::open(path)?;
        open_files().add(file.as_raw_fd(), 1);
        Ok(black_box(TrackedFile { file }))
    }

    #[inline(never)]
    fn create(path: &Path) -> io::Result<TrackedFile> {
        let file = File::create(path)?;
        open_files().add(file.as_raw_fd(), 1);
        Ok(black_box(TrackedFile { file }))
    }
}

impl Drop for TrackedFile {
    fn drop(&mut self) {
        // Removed before the descriptor is closed (the File field drops after this).
        open_files().remove(&self.file.as_raw_fd());
    }
}

/// Writes the input files; every handle is closed at the end of its loop turn.
#[inline(never)]
fn write_inputs(dir: &Path, n: usize) -> io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for i in 0..n {
        let p = dir.join(format!("input-{i}.txt"));
        let mut f = TrackedFile::create(&p)?;
        writeln!(f.file, "line {i}")?;
        paths.push(p);
    }
    Ok(black_box(paths))
}

/// Reads every file and closes it: leaves nothing open.
#[inline(never)]
fn read_all(paths: &[PathBuf]) -> io::Result<usize> {
    let mut total = 0;
    for p in paths {
        let mut f = TrackedFile::open(p)?;
        let mut s = String::new();
        total += f.file.read_to_string(&mut s)?;
    }
    Ok(black_box(total))
}

/// The bug this profile finds: handles kept in a cache that is never emptied.
#[inline(never)]
fn leak_into_cache(paths: &[PathBuf], cache: &mut Vec<TrackedFile>) -> io::Result<()> {
    for p in paths.iter().step_by(2) {
        cache.push(TrackedFile::open(p)?);
    }
    black_box(());
    Ok(())
}

fn main() -> io::Result<()> {
    let dir = std::env::temp_dir().join(format!("heaprof-custom-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let paths = write_inputs(&dir, 10)?;
    let bytes = read_all(&paths)?;
    let mut cache = Vec::new();
    leak_into_cache(&paths, &mut cache)?;
    let _config = TrackedFile::open(&paths[0])?;

    let p = open_files();
    println!("read {bytes} bytes; {} files open now\n", p.count());
    assert_eq!(p.count(), cache.len() + 1);
    p.write_to(io::stdout().lock(), 1)?;
    p.write_to(File::create("open_files.pb.gz")?, 0)?;
    println!("\nwrote open_files.pb.gz (go tool pprof -top open_files.pb.gz)");

    drop(cache);
    assert_eq!(p.count(), 1);
    drop(_config);
    assert_eq!(p.count(), 0);
    std::fs::remove_dir_all(&dir)
}
