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
            .find(|&&(o, _, sz, _)| o <= off && off - o < sz)
            .and_then(|&(o, v, _, _)| v.checked_add(off - o))
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
        // `v <= svma` (the partition point): the subtraction cannot wrap.
        if size != 0 && svma - v >= size {
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

/// Reads the build ID, `PT_LOAD` table and function symbols of the ELF file at `path`. A file
/// that is not ELF, or whose headers or tables are corrupt or cut short, gives an
/// [`io::ErrorKind::InvalidData`] error saying what is wrong.
pub fn read_elf(path: &Path) -> io::Result<ElfInfo> {
    Reader::new(File::open(path)?)?.info()
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

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
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
    /// Length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` with the bytes at offset `off`; an error if the source ends before.
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
}

impl Source for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, off)
    }
}

impl Source for &[u8] {
    fn len(&self) -> io::Result<u64> {
        Ok(<[u8]>::len(self) as u64)
    }

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

/// The `N` bytes at `at` in `b`, if `b` holds them.
fn field<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// `size` as a table's entry size, if it holds the `min` bytes of the fields read from each
/// entry (a 0 would also make the entries impossible to step through).
fn entry_size(table: &str, size: u64, min: u64) -> io::Result<usize> {
    if size < min {
        return Err(bad(format!(
            "ELF {table} entry size {size} is smaller than the {min} bytes of its fields"
        )));
    }
    usize::try_from(size).map_err(|_| bad(format!("ELF {table} entry size {size} too large")))
}

/// Reads an ELF file through bounds-checked reads only: every table is checked to lie inside
/// the file before it is read, every field inside its table before it is decoded.
struct Reader<S> {
    src: S,
    /// Length of the file.
    len: u64,
    is64: bool,
    le: bool,
}

impl<S: Source> Reader<S> {
    fn new(src: S) -> io::Result<Self> {
        let len = src.len()?;
        if len < 16 {
            return Err(bad(format!(
                "not an ELF file: {len} bytes, less than an ELF identification"
            )));
        }
        let mut id = [0u8; 16];
        src.read_exact_at(&mut id, 0)?;
        if id[..4] != *b"\x7fELF" {
            return Err(bad("not an ELF file"));
        }
        let is64 = match id[4] {
            1 => false,
            2 => true,
            c => return Err(bad(format!("bad ELF class {c}"))),
        };
        let le = match id[5] {
            1 => true,
            2 => false,
            d => return Err(bad(format!("bad ELF data encoding {d}"))),
        };
        Ok(Reader { src, len, is64, le })
    }

    /// The `len` bytes at `off`, read only if they lie inside the file and `len` is at most
    /// `MAX_TABLE_BYTES`; `what` names them in the error.
    fn bytes(&self, off: u64, len: u64, what: &str) -> io::Result<Vec<u8>> {
        if len > MAX_TABLE_BYTES {
            return Err(bad(format!("ELF {what} too large: {len} bytes")));
        }
        if off.checked_add(len).is_none_or(|end| end > self.len) {
            return Err(bad(format!(
                "ELF {what} past the end of the file: {len} bytes at offset {off}, file of {} bytes",
                self.len
            )));
        }
        let mut v = vec![0u8; len as usize];
        self.src.read_exact_at(&mut v, off)?;
        Ok(v)
    }

    fn u16(&self, b: &[u8], at: usize) -> Option<u64> {
        let a = field(b, at)?;
        Some(u64::from(if self.le {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        }))
    }

    fn u32(&self, b: &[u8], at: usize) -> Option<u32> {
        let a = field(b, at)?;
        Some(if self.le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        })
    }

    fn u64(&self, b: &[u8], at: usize) -> Option<u64> {
        let a = field(b, at)?;
        Some(if self.le {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        })
    }

    /// An address-sized field: 8 bytes at `at64` in ELF64, 4 bytes at `at32` in ELF32.
    fn word(&self, b: &[u8], at64: usize, at32: usize) -> Option<u64> {
        if self.is64 {
            self.u64(b, at64)
        } else {
            self.u32(b, at32).map(u64::from)
        }
    }

    /// An ELF header field two bytes wide: at `at64` in ELF64, at `at32` in ELF32.
    fn half(&self, b: &[u8], at64: usize, at32: usize) -> Option<u64> {
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
        let eh = self.bytes(0, if self.is64 { 64 } else { 52 }, "file header")?;
        let fields = || {
            Some(Header {
                phoff: self.word(&eh, 32, 28)?,
                shoff: self.word(&eh, 40, 32)?,
                phentsize: self.half(&eh, 54, 42)?,
                phnum: self.half(&eh, 56, 44)?,
                shentsize: self.half(&eh, 58, 46)?,
                shnum: self.half(&eh, 60, 48)?,
            })
        };
        fields().ok_or_else(|| bad("ELF file header too short"))
    }

    /// The program headers' `PT_LOAD` table and `PT_NOTE` areas (file offset, size).
    fn program_headers(&self, h: &Header) -> io::Result<(Vec<Load>, Vec<NoteArea>)> {
        let mut loads = Vec::new();
        let mut notes = Vec::new();
        if h.phoff == 0 || h.phnum == 0 {
            return Ok((loads, notes));
        }
        let what = "program header";
        let entsize = entry_size(what, h.phentsize, if self.is64 { 56 } else { 32 })?;
        // Both factors are 16-bit fields: the product fits.
        let ph = self.bytes(h.phoff, h.phentsize * h.phnum, "program header table")?;
        for e in ph.chunks_exact(entsize) {
            let (kind, load) = self
                .program_header(e)
                .ok_or_else(|| bad("ELF program header entry too short"))?;
            match kind {
                PT_LOAD => loads.push(load),
                PT_NOTE => notes.push((load.0, load.2)),
                _ => {}
            }
        }
        Ok((loads, notes))
    }

    /// One program header: its type, and its offset, vaddr, file size and executable flag.
    fn program_header(&self, e: &[u8]) -> Option<(u32, Load)> {
        let kind = self.u32(e, 0)?;
        let off = self.word(e, 8, 4)?;
        let vaddr = self.word(e, 16, 8)?;
        let filesz = self.word(e, 32, 16)?;
        let flags = self.u32(e, if self.is64 { 4 } else { 24 })?;
        Some((kind, (off, vaddr, filesz, flags & PF_X != 0)))
    }

    /// The section headers; none if the file has no section header table.
    fn section_headers(&self, h: &Header) -> io::Result<Vec<Sect>> {
        if h.shoff == 0 {
            return Ok(Vec::new());
        }
        let entsize = entry_size(
            "section header",
            h.shentsize,
            if self.is64 { 64 } else { 40 },
        )?;
        let shnum = if h.shnum != 0 {
            h.shnum
        } else {
            // Extended numbering: the count is in section 0's sh_size.
            let s0 = self.bytes(h.shoff, h.shentsize, "section header 0")?;
            self.word(&s0, 32, 20)
                .ok_or_else(|| bad("ELF section header 0 too short"))?
        };
        let size = h.shentsize.checked_mul(shnum).ok_or_else(|| {
            bad(format!(
                "ELF section header table too large: {shnum} entries of {} bytes",
                h.shentsize
            ))
        })?;
        let sh = self.bytes(h.shoff, size, "section header table")?;
        sh.chunks_exact(entsize)
            .map(|e| {
                self.section_header(e)
                    .ok_or_else(|| bad("ELF section header entry too short"))
            })
            .collect()
    }

    /// One section header.
    fn section_header(&self, e: &[u8]) -> Option<Sect> {
        Some(Sect {
            kind: self.u32(e, 4)?,
            link: self.u32(e, if self.is64 { 40 } else { 24 })?,
            offset: self.word(e, 24, 16)?,
            size: self.word(e, 32, 20)?,
            entsize: self.word(e, 56, 36)?,
        })
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

    /// The desc of the first `NT_GNU_BUILD_ID` note named `GNU` in the note area at `off`;
    /// `None` at the first note that does not fit in the area.
    fn find_build_id(&self, off: u64, size: u64) -> Option<Vec<u8>> {
        let b = self.bytes(off, size, "note area").ok()?;
        let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
        let mut rest = &b[..];
        while rest.len() >= 12 {
            let namesz = usize::try_from(self.u32(rest, 0)?).ok()?;
            let descsz = usize::try_from(self.u32(rest, 4)?).ok()?;
            let kind = self.u32(rest, 8)?;
            let name = rest.get(12..12usize.checked_add(namesz)?)?;
            let desc_at = 12usize.checked_add(align4(namesz)?)?;
            let desc = rest.get(desc_at..desc_at.checked_add(descsz)?)?;
            if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
                return Some(desc.to_vec());
            }
            let next = desc_at.checked_add(align4(descsz)?)?;
            rest = rest.get(next..).unwrap_or_default();
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
            Some(st) => self.bytes(st.offset, st.size, "string table")?,
            None => Vec::new(),
        };
        Ok((funcs, strtab))
    }

    /// The function symbols of table `t`, sorted by value, one per value.
    fn func_symbols(&self, t: &Sect) -> io::Result<Vec<Func>> {
        let min = if self.is64 { 24 } else { 16 };
        let entsize = entry_size(
            "symbol table",
            if t.entsize != 0 { t.entsize } else { min },
            min,
        )?;
        let b = self.bytes(t.offset, t.size, "symbol table")?;
        let mut out: Vec<(u64, u64, u32, bool)> = b
            .chunks_exact(entsize)
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
        let name = self.u32(e, 0)?;
        let (info, shndx, value, size) = if self.is64 {
            (
                *e.get(4)?,
                self.u16(e, 6)?,
                self.u64(e, 8)?,
                self.u64(e, 16)?,
            )
        } else {
            (
                *e.get(12)?,
                self.u16(e, 14)?,
                u64::from(self.u32(e, 4)?),
                u64::from(self.u32(e, 8)?),
            )
        };
        let global = info >> 4 != 0; // STB_GLOBAL or STB_WEAK
        (info & 0xf == STT_FUNC && shndx != 0 && value != 0).then_some((value, size, name, global))
    }
}

#[cfg(test)]
mod corrupt_tests;

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
