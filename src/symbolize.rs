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

use crate::pprof::elf::{self, ElfInfo};
use crate::pprof::maps::{self, MapEntry};

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
