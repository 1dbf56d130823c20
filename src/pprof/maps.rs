//! `/proc/self/maps`: the executable mappings of this process, as Go's `runtime/pprof` reads them.
//!
//! Called by profile writers (the builder, the text writers, the symbolizer), never by the
//! allocator or a signal handler: it allocates and does file I/O.
//!
//! Rules (Go's `parseProcSelfMaps` in `runtime/pprof/proto.go`): keep entries whose perms have `x` at index 2; fields are
//! `start-limit perms offset dev inode path`; a trailing ` (deleted)` is stripped; entries with
//! inode 0 and an empty path are skipped (`[vdso]` has a path, so it stays). File order is kept.

use std::io;

/// One executable mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub limit: u64,
    /// Permissions, e.g. `r-xp`.
    pub perms: String,
    /// File offset of `start`.
    pub offset: u64,
    /// Device, `major:minor`.
    pub dev: String,
    /// Inode (0 for anonymous and pseudo mappings).
    pub inode: u64,
    /// Path, ` (deleted)` stripped; may be a pseudo name like `[vdso]`.
    pub path: String,
    /// The line as read, for the `--- Memory map: ---` section of the text formats.
    pub raw: String,
}

impl MapEntry {
    /// Whether `addr` lies in `[start, limit)`.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.limit
    }

    /// Whether `path` names a file we can open (not `[vdso]`, `[vsyscall]`, ...).
    pub fn is_file(&self) -> bool {
        self.path.starts_with('/')
    }
}

/// Reads and parses `/proc/self/maps`. An unreadable file gives an error; callers turn that
/// into "no mappings" (Go then writes one fake mapping). A path that is not UTF-8 is kept
/// with U+FFFD in place of its bad bytes, and the other lines still parse.
pub fn read_self_maps() -> io::Result<Vec<MapEntry>> {
    let bytes = std::fs::read("/proc/self/maps")?;
    Ok(parse_maps(&String::from_utf8_lossy(&bytes)))
}

/// Parses maps text, keeping executable entries only. Malformed lines are skipped.
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MapEntry> {
    // start-limit perms offset dev inode [path...]
    let mut rest = line.trim_start();
    let mut field = || -> Option<&str> {
        let r = rest.trim_start();
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        let (f, tail) = r.split_at(end);
        rest = tail;
        (!f.is_empty()).then_some(f)
    };
    let range = field()?;
    let perms = field()?;
    let offset = field()?;
    let dev = field()?;
    let inode = field()?;
    let path = rest.trim();
    if perms.as_bytes().get(2) != Some(&b'x') {
        return None;
    }
    let (start, limit) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let limit = u64::from_str_radix(limit, 16).ok()?;
    let offset = u64::from_str_radix(offset, 16).ok()?;
    let inode: u64 = inode.parse().ok()?;
    let path = path.strip_suffix(" (deleted)").unwrap_or(path).to_string();
    if inode == 0 && path.is_empty() {
        return None;
    }
    Some(MapEntry {
        start,
        limit,
        perms: perms.to_string(),
        offset,
        dev: dev.to_string(),
        inode,
        path,
        raw: line.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SAMPLE: &str = "\
55d0c0a00000-55d0c0a40000 r--p 00000000 08:01 1234   /usr/bin/prog
55d0c0a40000-55d0c0b00000 r-xp 00040000 08:01 1234   /usr/bin/prog
55d0c0b00000-55d0c0b10000 rw-p 00100000 08:01 1234   /usr/bin/prog
7f0000000000-7f0000100000 r-xp 00028000 08:01 99     /lib/x86_64-linux-gnu/libc.so.6 (deleted)
7f0000200000-7f0000201000 r-xp 00000000 00:00 0
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0      [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0  [vsyscall]
garbage line
";

    #[test]
    fn parses_executable_entries_in_file_order() {
        let m = parse_maps(SAMPLE);
        let paths: Vec<&str> = m.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/usr/bin/prog",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "[vdso]",
                "[vsyscall]"
            ]
        );
        assert_eq!(m[0].start, 0x55d0c0a40000);
        assert_eq!(m[0].limit, 0x55d0c0b00000);
        assert_eq!(m[0].offset, 0x40000);
        assert_eq!(m[0].inode, 1234);
        assert_eq!((m[0].perms.as_str(), m[0].dev.as_str()), ("r-xp", "08:01"));
        assert!(m[0].contains(0x55d0c0a40000) && !m[0].contains(0x55d0c0b00000));
        assert!(m[0].is_file() && !m[2].is_file());
        assert!(m[1].raw.ends_with("(deleted)"));
    }

    /// Every byte of the sample replaced by each of a few characters that matter to the
    /// parser, and the sample cut after every byte: no panic, and every entry kept is one
    /// that the rules allow.
    #[test]
    fn mutated_lines_parse_or_are_skipped_never_a_panic() {
        let sample = SAMPLE.as_bytes();
        let mut inputs: Vec<Vec<u8>> = (0..=sample.len()).map(|n| sample[..n].to_vec()).collect();
        for at in 0..sample.len() {
            for c in [
                " ", "\t", "\n", "-", "x", "0", "f", "+", "\u{e9}", "\u{3000}",
            ] {
                let mut b = sample.to_vec();
                b.splice(at..=at, c.bytes());
                inputs.push(b);
            }
        }
        for b in &inputs {
            let text = String::from_utf8_lossy(b);
            for e in parse_maps(&text) {
                assert_eq!(e.perms.as_bytes().get(2), Some(&b'x'), "{text}");
                assert!(e.inode != 0 || !e.path.is_empty(), "{text}");
                assert!(text.lines().any(|l| l == e.raw), "{text}");
            }
        }
    }

    /// A mapped file whose path is not UTF-8 does not hide the other mappings (it made
    /// `read_self_maps` fail whole), and keeps its path with U+FFFD for the bad byte.
    #[test]
    fn a_path_that_is_not_utf8_keeps_every_mapping() {
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        let prefix = format!("heaprof-maps-{}-", std::process::id());
        let name = [prefix.as_bytes(), b"\xff"].concat();
        // Beside this test binary: a directory whose files may be mapped executable.
        let exe = std::env::current_exe().unwrap();
        let path = exe.with_file_name(std::ffi::OsStr::from_bytes(&name));
        std::fs::write(&path, [0u8; 4096]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: a new private read-only mapping of our own file at an address the kernel
        // picks: no existing memory is touched. It is unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        let maps = read_self_maps();
        if p != libc::MAP_FAILED {
            // SAFETY: `p` is the 4096-byte mapping made above; nothing else uses it.
            unsafe { libc::munmap(p, 4096) };
        }
        std::fs::remove_file(&path).unwrap();
        assert_ne!(p, libc::MAP_FAILED, "{}", io::Error::last_os_error());
        let maps = maps.unwrap();
        let e = maps.iter().find(|e| e.contains(p as u64)).unwrap();
        assert!(
            e.path.ends_with(&format!("/{prefix}\u{fffd}")),
            "{}",
            e.path
        );
        let here = a_path_that_is_not_utf8_keeps_every_mapping as fn() as usize as u64;
        assert!(maps
            .iter()
            .any(|e| e.contains(here) && Path::new(&e.path) == exe));
    }

    #[test]
    fn reads_own_maps_with_this_executable() {
        let m = read_self_maps().unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let here = parses_executable_entries_in_file_order as fn() as usize as u64;
        let e = m
            .iter()
            .find(|e| e.contains(here))
            .expect("a mapping holds our code");
        assert_eq!(std::path::Path::new(&e.path), exe);
    }
}
