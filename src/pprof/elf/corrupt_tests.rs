//! Corrupt ELF files give an error, never a panic: one hand-made minimal ELF file with each
//! known way to break the reader, then thousands of seeded mutations of real files (this test
//! binary and the shared libraries it has mapped).

use super::{read_elf_bytes, ElfInfo, Reader};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

// The minimal ELF64 little-endian file: where its parts are.
const PH: usize = 64;
const SH: usize = PH + 56;
const NOTE: usize = SH + 4 * 64;
const SYMTAB: usize = NOTE + 24; // after the 20-byte note, 8-aligned
const STRTAB: usize = SYMTAB + 2 * 24;
const LEN: usize = STRTAB + 3;
const LOAD_VADDR: u64 = 0x40_0000;
const FUNC: u64 = 0x40_1000;

fn put(b: &mut [u8], at: usize, v: u64, width: usize) {
    b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
}

/// Section header `i` of the minimal file: type, offset, size, link, entry size.
fn put_section(
    b: &mut [u8],
    i: usize,
    (kind, off, size, link, entsize): (u32, usize, usize, u32, u64),
) {
    let at = SH + i * 64;
    put(b, at + 4, kind.into(), 4);
    put(b, at + 24, off as u64, 8);
    put(b, at + 32, size as u64, 8);
    put(b, at + 40, link.into(), 4);
    put(b, at + 56, entsize, 8);
}

/// A valid ELF64 little-endian file: one executable `PT_LOAD` of the whole file at
/// `LOAD_VADDR`, and sections null, note (build ID `01020304`), symtab (function `f` of 16
/// bytes at `FUNC`), strtab.
fn minimal_elf() -> Vec<u8> {
    let mut b = vec![0u8; LEN];
    b[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    put(&mut b, 16, 2, 2); // ET_EXEC
    put(&mut b, 18, 62, 2); // EM_X86_64
    put(&mut b, 32, PH as u64, 8);
    put(&mut b, 40, SH as u64, 8);
    put(&mut b, 52, 64, 2);
    put(&mut b, 54, 56, 2);
    put(&mut b, 56, 1, 2);
    put(&mut b, 58, 64, 2);
    put(&mut b, 60, 4, 2);
    // PT_LOAD, R+X, offset 0.
    put(&mut b, PH, 1, 4);
    put(&mut b, PH + 4, 5, 4);
    put(&mut b, PH + 16, LOAD_VADDR, 8);
    put(&mut b, PH + 32, LEN as u64, 8);
    put_section(&mut b, 1, (7, NOTE, 20, 0, 0));
    put_section(&mut b, 2, (2, SYMTAB, 48, 3, 24));
    put_section(&mut b, 3, (3, STRTAB, 3, 0, 0));
    // Note: namesz 4, descsz 4, NT_GNU_BUILD_ID, "GNU\0", desc.
    put(&mut b, NOTE, 4, 4);
    put(&mut b, NOTE + 4, 4, 4);
    put(&mut b, NOTE + 8, 3, 4);
    b[NOTE + 12..NOTE + 20].copy_from_slice(b"GNU\0\x01\x02\x03\x04");
    // Symbol 1: name "f", global function, section 1, value FUNC, size 16.
    let sym = SYMTAB + 24;
    put(&mut b, sym, 1, 4);
    b[sym + 4] = 0x12;
    put(&mut b, sym + 6, 1, 2);
    put(&mut b, sym + 8, FUNC, 8);
    put(&mut b, sym + 16, 16, 8);
    b[STRTAB..].copy_from_slice(b"\0f\0");
    b
}

/// The minimal file with `edit` applied.
fn edited(edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = minimal_elf();
    edit(&mut b);
    b
}

/// The error reading `b` gives; fails the test if it reads.
fn error_of(b: &[u8]) -> io::Error {
    match read_elf_bytes(b) {
        Ok(_) => panic!("a corrupt file read as valid"),
        Err(e) => e,
    }
}

fn assert_error(b: &[u8], says: &str) {
    let e = error_of(b);
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    assert!(e.to_string().contains(says), "{e:?} should say {says:?}");
}

#[test]
fn the_minimal_file_reads() {
    let info = read_elf_bytes(&minimal_elf()).unwrap();
    assert_eq!(info.build_id_hex(), "01020304");
    assert_eq!(info.file_offset_to_svma(0x10), Some(LOAD_VADDR + 0x10));
    assert_eq!(info.file_offset_to_svma(LEN as u64), None);
    assert_eq!(info.first_exec_segment_offset(), Some(0));
    assert_eq!(info.func_symbol(FUNC + 15), Some((FUNC, &b"f"[..])));
    assert_eq!(info.func_start(FUNC + 16), None);
}

#[test]
fn zero_entry_sizes_are_errors() {
    assert_error(&edited(|b| put(b, 54, 0, 2)), "program header entry size 0");
    assert_error(&edited(|b| put(b, 58, 0, 2)), "section header entry size 0");
}

#[test]
fn entries_shorter_than_their_fields_are_errors() {
    assert_error(&edited(|b| put(b, 54, 8, 2)), "program header entry size 8");
    assert_error(
        &edited(|b| put(b, 58, 16, 2)),
        "section header entry size 16",
    );
    let symtab_entsize = SH + 2 * 64 + 56;
    assert_error(
        &edited(|b| put(b, symtab_entsize, 5, 8)),
        "symbol table entry size 5",
    );
}

#[test]
fn an_overflowing_extended_section_count_is_an_error() {
    // e_shnum 0: the count is section 0's sh_size; 2^62 entries of 64 bytes overflow a u64.
    let b = edited(|b| {
        put(b, 60, 0, 2);
        put(b, SH + 32, 1 << 62, 8);
    });
    assert_error(&b, "section header table");
}

#[test]
fn a_load_segment_ending_past_u64_max_maps_what_it_can() {
    // p_offset + p_filesz overflows: the segment holds offsets from p_offset to u64::MAX.
    let b = edited(|b| put(b, PH + 8, u64::MAX - 7, 8));
    let info = read_elf_bytes(&b).unwrap();
    assert_eq!(info.file_offset_to_svma(u64::MAX), Some(LOAD_VADDR + 7));
    assert_eq!(info.file_offset_to_svma(0x10), None);
    // A vaddr so high that the svma overflows: no svma.
    let b = edited(|b| put(b, PH + 16, u64::MAX, 8));
    let info = read_elf_bytes(&b).unwrap();
    assert_eq!(info.file_offset_to_svma(0), Some(u64::MAX));
    assert_eq!(info.file_offset_to_svma(1), None);
}

#[test]
fn a_function_ending_past_u64_max_holds_the_top_addresses() {
    let b = edited(|b| put(b, SYMTAB + 24 + 8, u64::MAX - 3, 8));
    let info = read_elf_bytes(&b).unwrap();
    assert_eq!(info.func_start(u64::MAX), Some(u64::MAX - 3));
}

#[test]
fn every_truncation_is_an_error_naming_the_end_of_the_file() {
    for len in 0..LEN {
        let e = error_of(&minimal_elf()[..len]);
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{len}: {e}");
        let msg = e.to_string();
        assert!(
            msg.contains("past the end") || msg.contains("not an ELF file"),
            "{len}: {msg}"
        );
    }
}

#[test]
fn notes_with_huge_sizes_give_no_build_id() {
    for field in [NOTE, NOTE + 4] {
        let b = edited(|b| put(b, field, u32::MAX.into(), 4));
        assert_eq!(read_elf_bytes(&b).unwrap().build_id, None);
    }
}

/// xorshift64*: a fixed seed gives the same cases on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// This test binary and up to three shared libraries it has mapped (libc among them).
fn real_elf_files() -> Vec<(String, Vec<u8>)> {
    let exe = std::env::current_exe().unwrap();
    let mut paths = vec![exe.to_string_lossy().into_owned()];
    let mut libs: Vec<String> = super::super::maps::read_self_maps()
        .unwrap()
        .into_iter()
        .map(|m| m.path)
        .filter(|p| p.starts_with('/') && p.contains(".so"))
        .collect();
    libs.sort();
    libs.dedup();
    libs.sort_by_key(|p| !p.contains("libc.so"));
    paths.extend(libs.into_iter().take(3));
    paths
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// Byte ranges of the file header and the program and section header tables of `b`.
fn header_regions(b: &[u8]) -> Vec<(usize, usize)> {
    let r = Reader::new(b).unwrap();
    let h = r.header().unwrap();
    let table = |off: u64, entsize: u64, n: u64| {
        let start = (off as usize).min(b.len());
        let end = off.saturating_add(entsize * n).min(b.len() as u64) as usize;
        (start, end)
    };
    let mut regions = vec![(0, if r.is64 { 64 } else { 52 })];
    regions.push(table(h.phoff, h.phentsize, h.phnum));
    regions.push(table(h.shoff, h.shentsize, h.shnum));
    regions.retain(|&(s, e)| s < e);
    regions
}

/// Overwrites bytes at random places of `regions` with random or boundary values; returns
/// what it overwrote, to undo.
fn mutate(rng: &mut Rng, b: &mut [u8], regions: &[(usize, usize)]) -> Vec<(usize, u8)> {
    const BYTES: [u8; 5] = [0, 1, 0x7f, 0x80, 0xff];
    const WORDS: [u64; 5] = [0, 1, u64::MAX, 1 << 63, u32::MAX as u64];
    let mut undo = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let (s, e) = regions[rng.below(regions.len())];
        let at = s + rng.below(e - s);
        let word = match rng.below(8) {
            0..=3 => vec![rng.next() as u8],
            4 | 5 => vec![BYTES[rng.below(BYTES.len())]],
            _ => WORDS[rng.below(WORDS.len())].to_le_bytes().to_vec(),
        };
        for (i, v) in word.into_iter().enumerate() {
            if let Some(x) = b.get_mut(at + i) {
                undo.push((at + i, *x));
                *x = v;
            }
        }
    }
    undo
}

/// Every query of `info`, at the addresses most likely to overflow.
fn query(info: &ElfInfo) {
    for a in [0, 1, 0x1000, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
        let _ = info.file_offset_to_svma(a);
        let _ = info.func_symbol(a);
    }
    let _ = (info.first_exec_segment_offset(), info.build_id_hex());
}

/// Outcomes of the mutation cases of one run.
#[derive(Default)]
struct Tally {
    ok: usize,
    err: usize,
    /// Errors of another kind than `InvalidData`, which carry no message saying what is wrong.
    unclear: Vec<String>,
    panics: Vec<String>,
}

/// Cases per file, seeded: the file-header and header-table bytes mutated, and one case in
/// four truncated at a random length.
fn run_cases(name: &str, b: &mut [u8], cases: usize, rng: &mut Rng, tally: &mut Tally) {
    let regions = header_regions(b);
    for case in 0..cases {
        let undo = mutate(rng, b, &regions);
        let written: Vec<(usize, u8)> = undo.iter().map(|&(at, _)| (at, b[at])).collect();
        let len = match rng.below(4) {
            0 => rng.below(b.len().min(4096) + 1),
            1 => rng.below(b.len() + 1),
            _ => b.len(),
        };
        let got = catch_unwind(AssertUnwindSafe(|| {
            read_elf_bytes(&b[..len]).map(|i| query(&i))
        }));
        match got {
            Ok(Ok(())) => tally.ok += 1,
            Ok(Err(e)) if e.kind() == io::ErrorKind::InvalidData => tally.err += 1,
            Ok(Err(e)) => tally
                .unclear
                .push(format!("{name} case {case}: unclear error {e:?}")),
            Err(_) => tally.panics.push(format!(
                "{name} case {case}: panic, len {len}, bytes {written:x?}"
            )),
        }
        for &(at, v) in undo.iter().rev() {
            b[at] = v;
        }
    }
}

#[test]
fn mutated_real_elf_files_give_ok_or_an_error_never_a_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut tally = Tally::default();
    let mut files = real_elf_files();
    files.push(("minimal".into(), minimal_elf()));
    for (name, b) in &mut files {
        run_cases(name, b, 800, &mut rng, &mut tally);
    }
    let Tally {
        ok,
        err,
        unclear,
        panics,
    } = tally;
    let total = ok + err + unclear.len() + panics.len();
    assert!(
        panics.is_empty() && unclear.is_empty(),
        "of {total} mutated files, {} panicked and {} gave an error without a message; first:\n{}",
        panics.len(),
        unclear.len(),
        [
            &panics[..panics.len().min(10)],
            &unclear[..unclear.len().min(3)]
        ]
        .concat()
        .join("\n")
    );
    // The mutations reach both outcomes: files that still read and files that do not.
    assert!(ok > 100 && err > 100, "ok {ok}, err {err}");
}
