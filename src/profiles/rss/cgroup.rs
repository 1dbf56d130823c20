//! The process's memory cgroup: its limit (the lowest along the hierarchy) and its usage,
//! for cgroup v1 (`memory.limit_in_bytes`, `memory.usage_in_bytes`; also hybrid hosts whose
//! memory controller is v1) and v2 (`memory.max`, `memory.current`).
//!
//! Called by profile writers and the dump thread, never by the allocator: it reads
//! `/proc/self/cgroup`, `/proc/self/mountinfo` and files under the cgroup mount, and
//! allocates. Nothing here fails loudly: no cgroup, or one we cannot read, is `None`.
//!
//! Where the directory is: the controller's line of `/proc/self/cgroup` gives the path
//! relative to the hierarchy's root, and the mount of that hierarchy in
//! `/proc/self/mountinfo` gives the directory it is mounted at (and which part of the
//! hierarchy the mount shows: inside a container the mount's root is the container's own
//! cgroup, so the path is taken relative to it).

use std::path::{Path, PathBuf};

/// Limits at or above this are "no limit" (cgroup v1 writes `PAGE_COUNTER_MAX` pages,
/// 9223372036854771712, when unlimited; v2 writes `max`).
const UNLIMITED: u64 = 1 << 62;

/// Which cgroup interface the memory controller has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// cgroup v1 (its own `memory` hierarchy).
    V1,
    /// cgroup v2 (the unified hierarchy).
    V2,
}

/// The process's memory cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// The interface.
    pub version: Version,
    /// The process's own cgroup directory.
    pub dir: PathBuf,
    /// Where the hierarchy is mounted (the walk up for the limit stops here).
    pub mount: PathBuf,
}

impl Cgroup {
    /// The process's memory cgroup, if it has one we can see.
    pub fn find() -> Option<Cgroup> {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let found = locate(&cgroups, &mounts)?;
        // A v2 hierarchy without the memory controller (a hybrid host's `unified` mount)
        // has no memory files.
        found.dir.join(found.usage_file()).exists().then_some(found)
    }

    fn limit_file(&self) -> &'static str {
        match self.version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        }
    }

    fn usage_file(&self) -> &'static str {
        match self.version {
            Version::V1 => "memory.usage_in_bytes",
            Version::V2 => "memory.current",
        }
    }

    /// The lowest limit from the process's cgroup up to the hierarchy's root (a parent's
    /// limit caps its children), with the file it came from; `None` when unlimited.
    pub fn limit(&self) -> Option<(u64, PathBuf)> {
        let mut best: Option<(u64, PathBuf)> = None;
        let mut dir = self.dir.as_path();
        loop {
            let file = dir.join(self.limit_file());
            if let Some(v) = read_value(&file).filter(|&v| v < UNLIMITED) {
                if best.as_ref().is_none_or(|(b, _)| v < *b) {
                    best = Some((v, file));
                }
            }
            if dir == self.mount {
                return best;
            }
            match dir.parent() {
                Some(p) if p.starts_with(&self.mount) => dir = p,
                _ => return best,
            }
        }
    }

    /// The memory charged to the process's cgroup now (all its processes, page cache
    /// included).
    pub fn usage(&self) -> Option<u64> {
        read_value(&self.dir.join(self.usage_file()))
    }
}

/// A number, or `max` (→ `u64::MAX`), from a cgroup file.
fn read_value(file: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(file).ok()?;
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

/// The memory cgroup from the text of `/proc/self/cgroup` and `/proc/self/mountinfo`: the
/// v1 `memory` controller if there is one, else the v2 hierarchy.
pub fn locate(cgroups: &str, mountinfo: &str) -> Option<Cgroup> {
    let mut v2_path = None;
    for line in cgroups.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            let (mount, root) = find_mount(mountinfo, |fs, opts| {
                fs == "cgroup" && opts.split(',').any(|o| o == "memory")
            })?;
            return Some(Cgroup {
                version: Version::V1,
                dir: join_under(&mount, &root, path)?,
                mount,
            });
        }
        if id == "0" && controllers.is_empty() {
            v2_path = Some(path);
        }
    }
    let path = v2_path?;
    let (mount, root) = find_mount(mountinfo, |fs, _| fs == "cgroup2")?;
    Some(Cgroup {
        version: Version::V2,
        dir: join_under(&mount, &root, path)?,
        mount,
    })
}

/// The first mount whose filesystem type and super options satisfy `want`: (mount point,
/// root of the hierarchy it shows).
fn find_mount(mountinfo: &str, want: impl Fn(&str, &str) -> bool) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        // `id parent major:minor root mount-point options [optional…] - fstype source super`
        let (left, right) = line.split_once(" - ")?;
        let mut l = left.split(' ');
        let root = l.nth(3)?;
        let mount_point = l.next()?;
        let mut r = right.split(' ');
        let fstype = r.next()?;
        let super_opts = r.nth(1).unwrap_or("");
        want(fstype, super_opts).then(|| (PathBuf::from(unescape(mount_point)), unescape(root)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| b[i] == b'\\' && o.iter().all(|d| (b'0'..=b'7').contains(d)));
        match oct {
            Some(o) => {
                let v = o.iter().fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(v as u8);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `mount` + `path` taken relative to the mount's `root`; `None` when the cgroup lies
/// outside what the mount shows.
fn join_under(mount: &Path, root: &str, path: &str) -> Option<PathBuf> {
    let rel = if root == "/" {
        path
    } else {
        let rest = path.strip_prefix(root)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest
    };
    Some(mount.join(rel.trim_start_matches('/')))
}

/// Physical memory in bytes (`sysconf`), `None` if unknown.
pub fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && size > 0).then(|| pages as u64 * size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str = "9:name=systemd:/\n4:memory:/process_api/abc\n3:cpuset:/\n0::/\n";
    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_the_v1_memory_controller_on_a_hybrid_host() {
        let c = locate(HYBRID_CGROUP, HYBRID_MOUNTS).unwrap();
        assert_eq!(c.version, Version::V1);
        assert_eq!(c.dir, Path::new("/sys/fs/cgroup/memory/process_api/abc"));
        assert_eq!(c.mount, Path::new("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn finds_a_v2_cgroup_and_strips_a_container_root() {
        let mounts = "29 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        let c = locate("0::/kubepods/pod1/app\n", mounts).unwrap();
        assert_eq!(c.version, Version::V2);
        assert_eq!(c.dir, Path::new("/sys/fs/cgroup/app"));
        assert_eq!(locate("0::/other\n", mounts), None, "outside the mount");
        assert_eq!(locate("0::/\n", ""), None, "not mounted");
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/tail\04"), r"/tail\04");
    }

    #[test]
    fn this_process_has_a_readable_cgroup_or_none() {
        // On these hosts (cgroup v1 memory controller) the process has one, with a usage.
        if let Some(c) = Cgroup::find() {
            assert!(c.usage().is_some_and(|u| u > 0), "{c:?}");
            if let Some((l, file)) = c.limit() {
                assert!(l > 0 && file.exists(), "{file:?}");
            }
        }
        assert!(physical_memory().is_some_and(|m| m >= 64 << 20));
    }
}
