//! Atomic profile files: a private temporary file in the target directory, written,
//! fsynced and renamed over the final name, so a reader sees either no file or a complete one.
//!
//! Called by the dump thread and the at-exit writer; never from a signal handler.
//!
//! - The temporary file is created with `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600: an
//!   existing file or a planted symlink at that name is never opened (another name is tried).
//! - `rename(2)` replaces the directory entry at the final name. If that entry is a symlink,
//!   the link itself is replaced; its target is never opened or written.
//! - After the rename the directory is fsynced, so the new name survives a crash.
//! - On any failure the temporary file is removed; the final name is left as it was.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinguishes temporary names made by this process (with the pid in the name).
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// How many temporary names to try when one already exists.
const TEMP_ATTEMPTS: usize = 16;

/// Writes `final_path` atomically with what `write` produces.
pub fn write_atomic(
    final_path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let dir = match final_path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = final_path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", final_path.display()),
        )
    })?;
    let (tmp_path, file) = create_temp(dir, &name.to_string_lossy())?;
    let result = fill_and_rename(file, &tmp_path, final_path, write);
    if let Err(e) = result {
        return Err(match fs::remove_file(&tmp_path) {
            Ok(()) => e,
            Err(rm) if rm.kind() == io::ErrorKind::NotFound => e,
            Err(rm) => io::Error::new(
                e.kind(),
                format!("{e} (and removing {} failed: {rm})", tmp_path.display()),
            ),
        });
    }
    sync_dir(dir)
}

/// Creates `.NAME.tmp.PID.SEQ` in `dir`, never following or reusing an existing entry.
fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".{name}.tmp.{pid}.{seq}"));
        match OpenOptions::new()
            .write(true)
            .create_new(true) // O_CREAT | O_EXCL
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", path.display()),
                ))
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no temporary name available")))
}

/// Checks that `dir` accepts new files by creating and removing a temporary one.
pub fn probe_writable(dir: &Path) -> io::Result<()> {
    let (path, file) = create_temp(dir, "heaprof-probe")?;
    drop(file);
    fs::remove_file(path)
}

fn fill_and_rename(
    file: File,
    tmp_path: &Path,
    final_path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let mut w = BufWriter::new(file);
    write(&mut w)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp_path, final_path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot rename to {}: {e}", final_path.display()),
        )
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("heaprof-file-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_complete_private_file_and_no_temp_remains() {
        let d = scratch("ok");
        let p = d.join("a.pb.gz");
        write_atomic(&p, |w| w.write_all(b"hello")).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(entries(&d), ["a.pb.gz"]);
        write_atomic(&p, |w| w.write_all(b"second")).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second");
    }

    #[test]
    fn failed_write_leaves_final_name_alone_and_removes_temp() {
        let d = scratch("fail");
        let p = d.join("a.pb.gz");
        fs::write(&p, b"old").unwrap();
        let e = write_atomic(&p, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("encoder failed"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("encoder failed"), "{e}");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert_eq!(entries(&d), ["a.pb.gz"]);
    }

    #[test]
    fn symlink_at_final_name_is_replaced_not_followed() {
        let d = scratch("link");
        let victim = d.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let p = d.join("a.pb.gz");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        write_atomic(&p, |w| w.write_all(b"profile")).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        let m = fs::symlink_metadata(&p).unwrap();
        assert!(m.file_type().is_file(), "the link itself was replaced");
        assert_eq!(fs::read(&p).unwrap(), b"profile");
        assert_ne!(m.ino(), fs::metadata(&victim).unwrap().ino());
    }

    #[test]
    fn missing_directory_is_an_error_naming_the_path() {
        let d = scratch("missing").join("no/such/dir");
        let e = write_atomic(&d.join("x"), |w| w.write_all(b"x")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("no/such/dir"), "{e}");
    }
}
