//! Minimal ELF reader: GNU build ID, `PT_LOAD` segments and function symbol starts.
//!
//! Called by profile writers only (builder, symbolizer): it allocates and reads files.
//!
//! Choice (documented per the design brief): we read the **file on disk** named by
//! `/proc/self/maps`, like Go's `runtime/pprof/elf.go`, not the in-memory `PT_NOTE` via
//! `dl_iterate_phdr`. That keeps this module free of FFI and `unsafe`, and the same parse also
//! yields the `PT_LOAD` table (to turn a runtime address into a link-time address) and the
//! `.symtab` function starts (for `func+0xoff` in the text formats). The cost: a file deleted or
//! replaced since it was mapped gives no or a wrong build ID (Go has the same limit).
//!
//! Build ID: section headers of type `SHT_NOTE` (7) holding a note named `GNU\0` of type
//! `NT_GNU_BUILD_ID` (3), desc as lowercase hex; if the file has no section headers, the
//! `PT_NOTE` program headers are searched the same way. Supports ELF32/ELF64, both byte orders.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const SHT_SYMTAB: u32 = 2;
const SHT_NOTE: u32 = 7;
const SHT_DYNSYM: u32 = 11;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const PF_X: u32 = 1;
const NT_GNU_BUILD_ID: u32 = 3;
const STT_FUNC: u8 = 2;
/// Refuse symbol tables larger than this (a corrupt header must not make us allocate GBs).
const MAX_TABLE_BYTES: u64 = 512 << 20;

/// A `PT_LOAD` segment: (file offset, vaddr, file size, executable).
type Load = (u64, u64, u64, bool);
/// An area of notes: (file offset, size).
type NoteArea = (u64, u64);
/// A function symbol: (value, size, name offset in the string table).
type Func = (u64, u64, u32);

/// What we need from one ELF file.
#[derive(Clone, Debug, Default)]
pub struct ElfInfo {
    /// GNU build ID bytes, if present.
    pub build_id: Option<Vec<u8>>,
    /// `PT_LOAD` segments.
    loads: Vec<Load>,
    /// Function symbols (name offsets in `strtab`), sorted by value, one per value.
    funcs: Vec<Func>,
    /// The string table of the symbol table `funcs` came from.
    strtab: Vec<u8>,
}

impl ElfInfo {
    /// The build ID as lowercase hex, `""` if absent.
    pub fn build_id_hex(&self) -> String {
        self.build_id.as_deref().map(hex).unwrap_or_default()
    }

    /// Link-time (svma) address of the byte at file offset `off`, via the `PT_LOAD` table.
    pub fn file_offset_to_svma(&self, off: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|&&(o, _, sz, _)| o <= off && off < o + sz)
            .map(|&(o, v, _, _)| v + (off - o))
    }

    /// File offset of the first executable `PT_LOAD` segment, if any.
    pub fn first_exec_segment_offset(&self) -> Option<u64> {
        self.loads.iter().find(|l| l.3).map(|l| l.0)
    }

    /// Start (svma) of the function symbol containing `svma`, if the symbol table has one.
    pub fn func_start(&self, svma: u64) -> Option<u64> {
        self.func_symbol(svma).map(|(v, _)| v)
    }

    /// Start (svma) and raw (mangled) name of the function symbol containing `svma`.
    pub fn func_symbol(&self, svma: u64) -> Option<(u64, &[u8])> {
        let i = self.funcs.partition_point(|&(v, _, _)| v <= svma);
        let &(v, size, name) = self.funcs.get(i.checked_sub(1)?)?;
        if size != 0 && svma >= v + size {
            return None;
        }
        let tail = self.strtab.get(name as usize..).unwrap_or_default();
        let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
        Some((v, &tail[..end]))
    }
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// Reads the build ID, `PT_LOAD` table and function symbols of the ELF file at `path`.
pub fn read_elf(path: &Path) -> io::Result<ElfInfo> {
    let f = File::open(path)?;
    Reader::new(f)?.info()
}

/// [`read_elf`] on the bytes of a file held in memory (the corrupt-file tests).
#[cfg(test)]
pub(crate) fn read_elf_bytes(bytes: &[u8]) -> io::Result<ElfInfo> {
    Reader::new(bytes)?.info()
}

/// The GNU build ID of `path` as lowercase hex; `""` on any failure (as Go does).
pub fn build_id(path: &Path) -> String {
    read_elf(path).map(|i| i.build_id_hex()).unwrap_or_default()
}

fn bad(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Where the program and section header tables are: offset, entry size, entry count.
struct Header {
    phoff: u64,
    phentsize: u64,
    phnum: u64,
    shoff: u64,
    shentsize: u64,
    /// 0 with extended numbering (the count is then in section 0).
    shnum: u64,
}

struct Sect {
    kind: u32,
    link: u32,
    offset: u64,
    size: u64,
    entsize: u64,
}

/// Where an ELF file's bytes are read from: the file itself, or bytes in memory (tests).
trait Source {
    /// Fills `buf` with the bytes at offset `off`; an error if the source ends before.
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
}

impl Source for File {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, off)
    }
}

impl Source for &[u8] {
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let end = off.checked_add(buf.len() as u64);
        let src = usize::try_from(off)
            .ok()
            .zip(end.and_then(|e| usize::try_from(e).ok()))
            .and_then(|(a, b)| self.get(a..b))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

struct Reader<S> {
    f: S,
    is64: bool,
    le: bool,
}

impl<S: Source> Reader<S> {
    fn new(f: S) -> io::Result<Self> {
        let mut id = [0u8; 16];
        f.read_exact_at(&mut id, 0)?;
        if id[..4] != *b"\x7fELF" {
            return Err(bad("not an ELF file"));
        }
        let is64 = match id[4] {
            1 => false,
            2 => true,
            _ => return Err(bad("bad ELF class")),
        };
        let le = match id[5] {
            1 => true,
            2 => false,
            _ => return Err(bad("bad ELF data encoding")),
        };
        Ok(Reader { f, is64, le })
    }

    fn bytes(&self, off: u64, len: u64) -> io::Result<Vec<u8>> {
        if len > MAX_TABLE_BYTES {
            return Err(bad("ELF table too large"));
        }
        let mut v = vec![0u8; len as usize];
        self.f.read_exact_at(&mut v, off)?;
        Ok(v)
    }

    fn u16(&self, b: &[u8], at: usize) -> u64 {
        let a = [b[at], b[at + 1]];
        u64::from(if self.le {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        })
    }

    fn u32(&self, b: &[u8], at: usize) -> u32 {
        let a = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if self.le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    }

    fn u64(&self, b: &[u8], at: usize) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[at..at + 8]);
        if self.le {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    }

    /// An address-sized field: 8 bytes at `at64` in ELF64, 4 bytes at `at32` in ELF32.
    fn word(&self, b: &[u8], at64: usize, at32: usize) -> u64 {
        if self.is64 {
            self.u64(b, at64)
        } else {
            u64::from(self.u32(b, at32))
        }
    }

    /// An ELF header field two bytes wide: at `at64` in ELF64, at `at32` in ELF32.
    fn half(&self, b: &[u8], at64: usize, at32: usize) -> u64 {
        self.u16(b, if self.is64 { at64 } else { at32 })
    }

    /// The file's build ID, `PT_LOAD` table and function symbols: the file header, then the
    /// program headers, the section headers, the notes and the symbol table they locate.
    fn info(&self) -> io::Result<ElfInfo> {
        let h = self.header()?;
        let (loads, segment_notes) = self.program_headers(&h)?;
        let sects = self.section_headers(&h)?;
        let build_id = self.build_id(&sects, &segment_notes);
        let (funcs, strtab) = self.symbols(&sects)?;
        Ok(ElfInfo {
            build_id,
            loads,
            funcs,
            strtab,
        })
    }

    /// Where the program and section header tables are, from the file header.
    fn header(&self) -> io::Result<Header> {
        let eh = self.bytes(0, if self.is64 { 64 } else { 52 })?;
        Ok(Header {
            phoff: self.word(&eh, 32, 28),
            shoff: self.word(&eh, 40, 32),
            phentsize: self.half(&eh, 54, 42),
            phnum: self.half(&eh, 56, 44),
            shentsize: self.half(&eh, 58, 46),
            shnum: self.half(&eh, 60, 48),
        })
    }

    /// The program headers' `PT_LOAD` table and `PT_NOTE` areas (file offset, size).
    fn program_headers(&self, h: &Header) -> io::Result<(Vec<Load>, Vec<NoteArea>)> {
        let mut loads = Vec::new();
        let mut notes = Vec::new();
        if h.phoff == 0 || h.phnum == 0 {
            return Ok((loads, notes));
        }
        let ph = self.bytes(h.phoff, h.phentsize * h.phnum)?;
        for e in ph.chunks_exact(h.phentsize as usize) {
            let kind = self.u32(e, 0);
            let off = self.word(e, 8, 4);
            let vaddr = self.word(e, 16, 8);
            let filesz = self.word(e, 32, 16);
            let flags = self.u32(e, if self.is64 { 4 } else { 24 });
            match kind {
                PT_LOAD => loads.push((off, vaddr, filesz, flags & PF_X != 0)),
                PT_NOTE => notes.push((off, filesz)),
                _ => {}
            }
        }
        Ok((loads, notes))
    }

    /// The section headers; none if the file has no section header table.
    fn section_headers(&self, h: &Header) -> io::Result<Vec<Sect>> {
        if h.shoff == 0 {
            return Ok(Vec::new());
        }
        let shnum = if h.shnum != 0 {
            h.shnum
        } else {
            // Extended numbering: the count is in section 0's sh_size.
            let s0 = self.bytes(h.shoff, h.shentsize)?;
            self.word(&s0, 32, 20)
        };
        let sh = self.bytes(h.shoff, h.shentsize * shnum)?;
        Ok(sh
            .chunks_exact(h.shentsize as usize)
            .map(|e| Sect {
                kind: self.u32(e, 4),
                link: self.u32(e, if self.is64 { 40 } else { 24 }),
                offset: self.word(e, 24, 16),
                size: self.word(e, 32, 20),
                entsize: self.word(e, 56, 36),
            })
            .collect())
    }

    /// The GNU build ID from the first note that holds one: in the `SHT_NOTE` sections, or in
    /// the `PT_NOTE` segments when the file has no section headers.
    fn build_id(&self, sects: &[Sect], segment_notes: &[NoteArea]) -> Option<Vec<u8>> {
        let section_notes: Vec<NoteArea> = sects
            .iter()
            .filter(|s| s.kind == SHT_NOTE)
            .map(|s| (s.offset, s.size))
            .collect();
        let note_areas = if sects.is_empty() {
            segment_notes
        } else {
            &section_notes
        };
        note_areas
            .iter()
            .find_map(|&(off, size)| self.find_build_id(off, size))
    }

    /// The desc of the first `NT_GNU_BUILD_ID` note named `GNU` in the note area at `off`.
    fn find_build_id(&self, off: u64, size: u64) -> Option<Vec<u8>> {
        let b = self.bytes(off, size).ok()?;
        let mut p = 0usize;
        let align4 = |n: usize| (n + 3) & !3;
        while p + 12 <= b.len() {
            let namesz = self.u32(&b, p) as usize;
            let descsz = self.u32(&b, p + 4) as usize;
            let kind = self.u32(&b, p + 8);
            let name_at = p + 12;
            let desc_at = name_at.checked_add(align4(namesz))?;
            let end = desc_at.checked_add(align4(descsz))?;
            if desc_at + descsz > b.len() {
                return None;
            }
            if kind == NT_GNU_BUILD_ID && b[name_at..name_at + namesz] == *b"GNU\0" {
                return Some(b[desc_at..desc_at + descsz].to_vec());
            }
            p = end;
        }
        None
    }

    /// The function symbols of `SHT_SYMTAB` (else `SHT_DYNSYM`) and the string table that
    /// table links to; both empty if the file has neither.
    fn symbols(&self, sects: &[Sect]) -> io::Result<(Vec<Func>, Vec<u8>)> {
        let table = sects
            .iter()
            .find(|s| s.kind == SHT_SYMTAB)
            .or_else(|| sects.iter().find(|s| s.kind == SHT_DYNSYM));
        let Some(t) = table else {
            return Ok((Vec::new(), Vec::new()));
        };
        let funcs = self.func_symbols(t)?;
        let strtab = match sects.get(t.link as usize) {
            Some(st) => self.bytes(st.offset, st.size)?,
            None => Vec::new(),
        };
        Ok((funcs, strtab))
    }

    /// The function symbols of table `t`, sorted by value, one per value.
    fn func_symbols(&self, t: &Sect) -> io::Result<Vec<Func>> {
        let entsize = if t.entsize != 0 {
            t.entsize
        } else if self.is64 {
            24
        } else {
            16
        };
        let b = self.bytes(t.offset, t.size)?;
        let mut out: Vec<(u64, u64, u32, bool)> = b
            .chunks_exact(entsize as usize)
            .filter_map(|e| self.func_entry(e))
            .collect();
        // Aliases at one address: prefer the largest size, then a global, then the lowest
        // name offset, so the choice is deterministic.
        out.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then(b.1.cmp(&a.1))
                .then(b.3.cmp(&a.3))
                .then(a.2.cmp(&b.2))
        });
        out.dedup_by_key(|e| e.0);
        Ok(out.into_iter().map(|(v, s, n, _)| (v, s, n)).collect())
    }

    /// A symbol table entry that defines a function: (value, size, name offset, global).
    fn func_entry(&self, e: &[u8]) -> Option<(u64, u64, u32, bool)> {
        let name = self.u32(e, 0);
        let (info, shndx, value, size) = if self.is64 {
            (e[4], self.u16(e, 6), self.u64(e, 8), self.u64(e, 16))
        } else {
            (
                e[12],
                self.u16(e, 14),
                u64::from(self.u32(e, 4)),
                u64::from(self.u32(e, 8)),
            )
        };
        let global = info >> 4 != 0; // STB_GLOBAL or STB_WEAK
        (info & 0xf == STT_FUNC && shndx != 0 && value != 0).then_some((value, size, name, global))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn own_executable_has_loads_funcs_and_matches_readelf_build_id() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let info = read_elf(&exe).unwrap();
        assert!(!info.loads.is_empty());
        assert!(!info.funcs.is_empty());
        let id = info.build_id_hex();
        assert!(id
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        // Cross-check with an independent reader when one is installed.
        if let Ok(out) = Command::new("readelf").arg("-n").arg(&exe).output() {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some(l) = text.lines().find(|l| l.contains("Build ID:")) {
                assert_eq!(l.split("Build ID:").nth(1).unwrap().trim(), id);
            }
        }
    }

    #[test]
    fn func_start_finds_symbol_of_a_function() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let info = read_elf(&exe).unwrap();
        let maps = super::super::maps::read_self_maps().unwrap();
        let f = func_start_finds_symbol_of_a_function as fn() as usize as u64;
        let m = maps.iter().find(|m| m.contains(f)).unwrap();
        let svma = info.file_offset_to_svma(f - m.start + m.offset).unwrap();
        // A function's own entry is the start of its symbol; 5 bytes in still is.
        assert_eq!(info.func_start(svma), Some(svma));
        assert_eq!(info.func_start(svma + 5), Some(svma));
        let (_, name) = info.func_symbol(svma + 5).unwrap();
        let name = std::str::from_utf8(name).unwrap();
        let demangled = format!("{:#}", backtrace::SymbolName::new(name.as_bytes()));
        assert!(
            demangled.ends_with("elf::tests::func_start_finds_symbol_of_a_function"),
            "{name}"
        );
    }

    #[test]
    fn non_elf_is_an_error_and_empty_build_id() {
        assert!(read_elf(Path::new("/proc/self/maps")).is_err());
        assert_eq!(build_id(Path::new("/nonexistent/x")), "");
        assert_eq!(hex(&[0x0a, 0xff, 0x10]), "0aff10");
    }
}
