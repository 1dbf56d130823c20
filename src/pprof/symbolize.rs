//! Address → frames (with inlined frames), cached per profile write.
//!
//! Called by profile writers only (the pprof builder and the `debug=1` text writers). It
//! allocates, reads files and takes `backtrace`'s global lock, so it must never run inside the
//! allocator or a signal handler.
//!
//! Names and lines come from `backtrace::resolve` (DWARF via gimli, falling back to the symbol
//! table). The symbol start (`sym_addr`, for `func+0xoff`) comes from our own `.symtab` read in
//! [`crate::pprof::elf`], since `backtrace` does not report it.

use std::collections::HashMap;
use std::ffi::c_void;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::pprof::elf::{self, ElfInfo};
use crate::pprof::maps::{self, MapEntry};

/// Held around every call into `backtrace` (which takes its own global lock and updates its
/// global cache of parsed debug info): the fork protocol's prepare hook takes it too
/// (`lock_order`), so a fork never copies `backtrace`'s lock or cache into the child in the
/// middle of a lookup by another thread. The owner's `pthread_self()`, 0 when free.
static SYM_OWNER: AtomicUsize = AtomicUsize::new(0);
/// Set when the prepare handler took [`SYM_OWNER`] (so the parent and child handlers release
/// it; it stays clear when the forking thread itself was inside a lookup).
static SYM_TAKEN_FOR_FORK: AtomicBool = AtomicBool::new(false);

fn self_id() -> usize {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    unsafe { libc::pthread_self() as usize }
}

/// Takes [`SYM_OWNER`] for this thread, yielding while another thread holds it.
fn take_sym_lock(me: usize) {
    while SYM_OWNER
        .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
}

struct SymLock;

impl SymLock {
    fn acquire() -> SymLock {
        crate::base::fork::ensure_registered();
        take_sym_lock(self_id());
        SymLock
    }
}

impl Drop for SymLock {
    fn drop(&mut self) {
        SYM_OWNER.store(0, Ordering::Release);
    }
}

/// Holds the symbolizer's lock until dropped: for code that calls the `backtrace` crate
/// directly (its global lock must not be held across a fork; see [`fork_prepare`]). The
/// crate's own tests take it around `backtrace::trace`.
#[cfg(test)]
pub(crate) fn sym_lock() -> impl Drop {
    SymLock::acquire()
}

/// `pthread_atfork` prepare: waits for any lookup in progress on another thread to finish
/// and holds the lock across the fork. Skipped if this thread holds it (a fork from a signal
/// handler that interrupted a lookup): waiting would never end.
pub(crate) fn fork_prepare() {
    let me = self_id();
    if SYM_OWNER.load(Ordering::Relaxed) == me {
        return;
    }
    take_sym_lock(me);
    SYM_TAKEN_FOR_FORK.store(true, Ordering::Relaxed);
}

/// `pthread_atfork` parent and child: releases what [`fork_prepare`] took.
pub(crate) fn fork_release() {
    if SYM_TAKEN_FOR_FORK.swap(false, Ordering::Relaxed) {
        SYM_OWNER.store(0, Ordering::Release);
    }
}

/// One (possibly inlined) frame at a PC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymFrame {
    /// Demangled name without the hash suffix (`{:#}`); `""` if unknown.
    pub name: String,
    /// The raw (mangled) symbol name.
    pub system_name: String,
    /// Source file, if debug info has it.
    pub file: Option<String>,
    /// Source line; 0 if unknown.
    pub line: u32,
    /// Runtime address of the enclosing symbol's start; 0 if unknown.
    pub sym_addr: usize,
}

/// A caching resolver; make one per profile write and drop it afterwards.
#[derive(Default)]
pub struct Symbolizer {
    /// PC → frames, innermost first. Misses are cached too (as empty).
    cache: HashMap<usize, Vec<SymFrame>>,
    /// Executable mappings of this process, read on first use, re-read on a miss.
    maps: Option<Vec<MapEntry>>,
    /// Parsed ELF files by path; `None` = unreadable.
    elves: HashMap<String, Option<ElfInfo>>,
}

/// A summary: how many addresses, mappings and ELF files are cached.
impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("cached_pcs", &self.cache.len())
            .field("mappings", &self.maps.as_ref().map(Vec::len))
            .field("elf_files", &self.elves.len())
            .finish()
    }
}

impl Symbolizer {
    /// An empty resolver. Reads nothing until used.
    pub fn new() -> Self {
        Self::default()
    }

    /// All frames at `pc` (a PC to look up as is: callers pass return address − 1), innermost
    /// inlined frame first, the real function last; empty if unknown.
    pub fn resolve(&mut self, pc: usize) -> &[SymFrame] {
        if !self.cache.contains_key(&pc) {
            let frames = self.lookup(pc);
            self.cache.insert(pc, frames);
        }
        &self.cache[&pc]
    }

    /// The executable mappings (`/proc/self/maps`), read once per symbolizer; empty if the file
    /// cannot be read.
    pub fn maps(&mut self) -> &[MapEntry] {
        self.maps
            .get_or_insert_with(|| maps::read_self_maps().unwrap_or_default())
    }

    /// Lowercase hex GNU build ID of the file at `path`, `""` if none or unreadable.
    pub fn build_id(&mut self, path: &str) -> String {
        self.elf(path)
            .map(ElfInfo::build_id_hex)
            .unwrap_or_default()
    }

    /// The parsed ELF file at `path` (cached), `None` if unreadable.
    pub fn elf(&mut self, path: &str) -> Option<&ElfInfo> {
        self.elves
            .entry(path.to_string())
            .or_insert_with(|| elf::read_elf(Path::new(path)).ok())
            .as_ref()
    }

    fn lookup(&mut self, pc: usize) -> Vec<SymFrame> {
        if pc == 0 {
            return Vec::new();
        }
        let (sym_addr, symtab_name) = self.symbol(pc).unwrap_or((0, None));
        let mut frames = Vec::new();
        // backtrace::resolve subtracts 1 from the address it is given (it expects return
        // addresses); our contract is "look up `pc` as is", so hand it pc + 1.
        let _sym = SymLock::acquire();
        backtrace::resolve(pc.wrapping_add(1) as *mut c_void, |s| {
            let file = s.filename().map(|p| p.display().to_string());
            let (name, system_name) = match s.name() {
                Some(n) => (
                    format!("{n:#}"),
                    String::from_utf8_lossy(n.as_bytes()).into_owned(),
                ),
                None if file.is_some() => (String::new(), String::new()),
                None => return,
            };
            frames.push(SymFrame {
                name,
                system_name,
                file,
                line: s.lineno().unwrap_or(0),
                sym_addr,
            });
        });
        // The outermost frame is the real function: its symbol table name is the full linkage
        // name, whereas DWARF from `debug = "line-tables-only"` names it unqualified (`trace`).
        if let (Some(raw), Some(last)) = (symtab_name, frames.last_mut()) {
            last.name = format!("{:#}", backtrace::SymbolName::new(&raw));
            last.system_name = String::from_utf8_lossy(&raw).into_owned();
        }
        frames
    }

    /// Runtime start address and raw name of the function symbol containing `pc`, from the
    /// file's `.symtab`.
    fn symbol(&mut self, pc: usize) -> Option<(usize, Option<Vec<u8>>)> {
        let pc64 = pc as u64;
        let m = match self.maps().iter().find(|m| m.contains(pc64)) {
            Some(m) => m.clone(),
            None => {
                // A library may have been loaded since we read the maps.
                self.maps = None;
                self.maps().iter().find(|m| m.contains(pc64))?.clone()
            }
        };
        if !m.is_file() {
            return None;
        }
        let info = self.elf(&m.path)?;
        let svma = info.file_offset_to_svma(pc64 - m.start + m.offset)?;
        let (start, name) = info.func_symbol(svma)?;
        let name = (!name.is_empty()).then(|| name.to_vec());
        Some((pc - (svma - start) as usize, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn capture_here() -> Vec<usize> {
        let mut ips = Vec::new();
        let _sym = crate::pprof::symbolize::sym_lock(); // no fork while backtrace's lock is held
        backtrace::trace(|f| {
            ips.push(f.ip() as usize);
            true
        });
        ips
    }

    /// Whether `name` ends in a legacy-mangling hash `::h<16 hex>`.
    fn has_hash_suffix(name: &str) -> bool {
        name.rsplit_once("::h")
            .is_some_and(|(_, h)| h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()))
    }

    /// A fork while another thread is inside `backtrace::resolve` (holding backtrace's lock):
    /// the prepare handler waits for it, so the child can symbolize (without it the child
    /// would wait forever for a lock owned by a thread it does not have).
    #[test]
    fn child_forked_during_a_lookup_can_symbolize() {
        use std::sync::mpsc;
        let (inside_tx, inside_rx) = mpsc::channel();
        let pc = capture_here as fn() -> Vec<usize> as usize;
        let holder = std::thread::spawn(move || {
            let _l = SymLock::acquire();
            backtrace::resolve((pc + 16) as *mut c_void, |_| {
                let _ = inside_tx.send(());
                std::thread::sleep(std::time::Duration::from_millis(300));
            });
        });
        inside_rx.recv().unwrap();
        let status =
            crate::base::fork::test_support::in_child(std::time::Duration::from_secs(30), || {
                let mut sym = Symbolizer::new();
                let named = sym
                    .resolve(pc)
                    .iter()
                    .any(|f| f.name.ends_with("capture_here"));
                i32::from(!named)
            });
        holder.join().unwrap();
        assert_eq!(status, Some(0), "None = the child deadlocked");
    }

    #[test]
    fn resolves_a_known_function_with_file_line_and_offset() {
        let ips: Vec<usize> = capture_here().into_iter().filter(|&ip| ip != 0).collect();
        let mut sym = Symbolizer::new();
        let mut found = false;
        for &ip in &ips {
            for f in sym.resolve(ip - 1).to_vec() {
                assert!(!has_hash_suffix(&f.name), "{}", f.name);
                if f.name.ends_with("symbolize::tests::capture_here") {
                    found = true;
                    assert!(f.system_name.starts_with("_R") || f.system_name.starts_with("_ZN"));
                    assert!(f.file.as_deref().unwrap().ends_with("symbolize.rs"));
                    assert!(f.line > 0);
                    assert_eq!(f.sym_addr, capture_here as fn() -> Vec<usize> as usize);
                }
            }
        }
        assert!(found, "capture_here not found");
    }

    #[test]
    fn unknown_and_cached() {
        let mut sym = Symbolizer::new();
        assert!(sym.resolve(0).is_empty());
        assert!(sym.resolve(8).is_empty());
        let a = sym.resolve(unknown_and_cached as fn() as usize).to_vec();
        assert!(!a.is_empty());
        assert_eq!(sym.resolve(unknown_and_cached as fn() as usize), &a[..]);
        assert_eq!(sym.cache.len(), 3);
    }
}
