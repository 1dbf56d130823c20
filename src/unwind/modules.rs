//! The process's module list (from `dl_iterate_phdr`) and the framehop unwinder built on it.
//!
//! Owns the published [`State`]: a framehop unwinder over in-memory slices of each module's
//! `.eh_frame_hdr` / `.eh_frame` (no file I/O), plus a sorted table of executable ranges used
//! to tell "PC in a known module" and to spot the signal-return trampoline.
//!
//! Publication: one `AtomicPtr<State>`; a builder (at most one at a time, by try-lock) makes a
//! new `State` and swaps it in. Readers (any thread, signal handlers included) just load the
//! pointer. Old states are leaked, because a concurrent walk may still use them; the number of
//! published states is capped at [`MAX_STATES`], so the leak is bounded (a few KB each).
//!
//! Building takes the loader's lock (inside `dl_iterate_phdr`) and allocates: never from a
//! signal handler. A rebuild is attempted only when a walk meets a PC outside every known
//! module, and it first checks glibc's load/unload counters (`dlpi_adds`/`dlpi_subs`) so an
//! unchanged process costs one short `dl_iterate_phdr` call and no allocation.
//!
//! Limit: the section slices are `'static` only while the module stays loaded. A library that
//! is `dlclose`d, then has its address range reused by another library before any rebuild,
//! could make a walk read unmapped memory. Rust programs rarely `dlclose`; documented.

use core::cell::Cell;
use core::ffi::{c_int, c_void, CStr};
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use framehop::{ExplicitModuleSectionInfo, Module, MustNotAllocateDuringUnwind, UnwinderNative};

/// framehop unwinder over borrowed, mapped section bytes.
pub(super) type Unwinder = UnwinderNative<&'static [u8], MustNotAllocateDuringUnwind>;

/// At most this many states are ever published (and so leaked); later rebuilds are skipped.
pub(super) const MAX_STATES: usize = 64;

/// One executable range of a module (AVMA), for "is this PC known?".
#[derive(Clone, Copy, Debug)]
struct TextRange {
    start: usize,
    end: usize,
    /// All PT_LOAD segments in the range are readable (so code bytes may be inspected).
    readable: bool,
}

/// An immutable snapshot of the module list, shared by all walks.
pub(super) struct State {
    pub(super) unwinder: Unwinder,
    /// Sorted by `start`, non-overlapping.
    text: Vec<TextRange>,
    /// Address of glibc's `__restore_rt` if known when built (taken from an installed
    /// handler's `sa_restorer` and checked against its code bytes), else 0.
    restorer: usize,
    /// glibc's `dlpi_adds` / `dlpi_subs` when this state was built.
    adds: u64,
    subs: u64,
}

/// `mov $15, %rax; syscall` — glibc's x86_64 `__restore_rt` (rt_sigreturn trampoline).
const RESTORE_RT: [u8; 9] = [0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05];

impl State {
    fn range_of(&self, addr: usize) -> Option<&TextRange> {
        let i = self.text.partition_point(|r| r.start <= addr);
        let r = self.text.get(i.checked_sub(1)?)?;
        (addr < r.end).then_some(r)
    }

    /// Is `addr` inside the executable range of a module in this state?
    pub(super) fn is_known(&self, addr: usize) -> bool {
        self.range_of(addr).is_some()
    }

    /// Is `addr` the start of the `rt_sigreturn` trampoline (i.e. a return address that
    /// marks a kernel signal frame)? One comparison when the trampoline's address is known;
    /// otherwise compares code bytes, read only inside a readable known module.
    #[inline]
    pub(super) fn is_sigreturn_trampoline(&self, addr: usize) -> bool {
        if self.restorer != 0 {
            addr == self.restorer
        } else {
            self.has_restore_rt_code(addr)
        }
    }

    fn has_restore_rt_code(&self, addr: usize) -> bool {
        match self.range_of(addr) {
            Some(r)
                if r.readable
                    && addr
                        .checked_add(RESTORE_RT.len())
                        .is_some_and(|e| e <= r.end) =>
            {
                // SAFETY: [addr, addr + 9) lies inside a PT_LOAD segment of a loaded module
                // that is mapped readable (PF_R), see `TextRange::readable`.
                let code =
                    unsafe { core::slice::from_raw_parts(addr as *const u8, RESTORE_RT.len()) };
                code == RESTORE_RT
            }
            _ => false,
        }
    }

    /// `sa_restorer` of any installed handler (glibc sets it to `__restore_rt`; Rust's std
    /// installs SIGSEGV/SIGBUS handlers at startup), if its code bytes match.
    fn find_restorer(&self) -> usize {
        for sig in 1..32 {
            let mut old = core::mem::MaybeUninit::<libc::sigaction>::zeroed();
            // SAFETY: a null new action only queries; `old` is a valid out-pointer.
            if unsafe { libc::sigaction(sig, core::ptr::null(), old.as_mut_ptr()) } != 0 {
                continue;
            }
            // SAFETY: zero-initialised, then filled by the successful call; plain data.
            let old = unsafe { old.assume_init() };
            if let Some(f) = old.sa_restorer {
                let a = f as usize;
                if self.has_restore_rt_code(a) {
                    return a;
                }
            }
        }
        0
    }

    /// Number of modules with an executable range.
    pub(super) fn module_count(&self) -> usize {
        self.text.len()
    }
}

static STATE: AtomicPtr<State> = AtomicPtr::new(core::ptr::null_mut());
/// Held (true) by the one thread building a state.
static BUILDING: AtomicBool = AtomicBool::new(false);
/// Number of states published so far (<= MAX_STATES).
static PUBLISHED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread holds BUILDING (so a re-entrant call must not wait for itself).
    static IN_BUILD: Cell<bool> = const { Cell::new(false) };
}

/// The current state, if one was published. Async-signal-safe (one atomic load).
pub(super) fn current() -> Option<&'static State> {
    let p = STATE.load(Ordering::Acquire);
    // SAFETY: a non-null STATE points to a leaked Box<State> that is never freed or mutated
    // after publication (Release store in `publish`, Acquire load here).
    unsafe { p.as_ref() }
}

/// Number of states published (rebuilds + 1), for stats.
pub(super) fn published() -> usize {
    PUBLISHED.load(Ordering::Relaxed)
}

/// The current state, building the first one if needed. `wait`: if another thread is building
/// the first state, spin-yield (bounded) for it. Not async-signal-safe.
pub(super) fn get_or_build(wait: bool) -> Option<&'static State> {
    if let Some(s) = current() {
        return Some(s);
    }
    for _ in 0..10_000 {
        if let Some(s) = rebuild_if_changed() {
            return Some(s);
        }
        if !wait || IN_BUILD.get() {
            return None;
        }
        std::thread::yield_now();
    }
    current()
}

/// Rebuild and publish if modules were loaded/unloaded since the current state was built.
/// Returns the (possibly new) current state; `None` if there is none and this thread could not
/// build one now (someone else is building, or re-entrancy). Never waits for other builders.
pub(super) fn rebuild_if_changed() -> Option<&'static State> {
    if IN_BUILD.get()
        || BUILDING
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        return current();
    }
    IN_BUILD.set(true);
    let old = current();
    let stale = match old {
        None => true,
        Some(s) => {
            PUBLISHED.load(Ordering::Relaxed) < MAX_STATES && load_counters() != (s.adds, s.subs)
        }
    };
    if stale {
        crate::base::fork::ensure_registered();
        let new = Box::new(build());
        STATE.store(Box::into_raw(new), Ordering::Release);
        PUBLISHED.fetch_add(1, Ordering::Relaxed);
        // The old state is leaked on purpose: concurrent walks may still be using it.
    }
    IN_BUILD.set(false);
    BUILDING.store(false, Ordering::Release);
    current()
}

/// In a forked child: a build in progress on another thread of the parent never finishes
/// here; clear its flag so the child can build (the partial build is leaked).
pub(super) fn after_fork_child() {
    BUILDING.store(false, Ordering::Release);
}

/// glibc's (adds, subs) counters: read from the first module, then stop iterating.
fn load_counters() -> (u64, u64) {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info pointer for the duration of the call and
        // our own `data`, which points to the (u64, u64) below.
        unsafe {
            let info = &*info;
            *(data as *mut (u64, u64)) = (info.dlpi_adds, info.dlpi_subs);
        }
        1 // stop after the first module
    }
    let mut counters = (0u64, 0u64);
    // SAFETY: the callback matches the expected signature and only writes `counters`.
    unsafe { libc::dl_iterate_phdr(Some(first), &mut counters as *mut _ as *mut c_void) };
    counters
}

struct Collected {
    modules: Vec<Module<&'static [u8]>>,
    text: Vec<TextRange>,
    adds: u64,
    subs: u64,
}

fn build() -> State {
    let mut c = Collected {
        modules: Vec::new(),
        text: Vec::new(),
        adds: 0,
        subs: 0,
    };
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info for the call's duration; `data` is our
        // `&mut Collected`, used by this thread only.
        let (info, c) = unsafe { (&*info, &mut *(data as *mut Collected)) };
        c.adds = info.dlpi_adds;
        c.subs = info.dlpi_subs;
        // SAFETY: the loader guarantees dlpi_phdr points to dlpi_phnum program headers that stay
        // mapped while the module is loaded; we are inside the callback, so it is loaded.
        if let Some((module, text)) = unsafe { module_from_phdrs(info) } {
            c.modules.push(module);
            c.text.push(text);
        }
        0
    }
    // SAFETY: the callback matches the expected signature and `c` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut c as *mut Collected as *mut c_void) };
    let mut unwinder = Unwinder::new();
    for m in c.modules {
        framehop::Unwinder::add_module(&mut unwinder, m);
    }
    c.text.sort_by_key(|r| r.start);
    let mut state = State {
        unwinder,
        text: c.text,
        restorer: 0,
        adds: c.adds,
        subs: c.subs,
    };
    state.restorer = state.find_restorer();
    state
}

/// Build the framehop module for one loaded object.
///
/// # Safety
/// `info` must come from a `dl_iterate_phdr` callback that is still running.
unsafe fn module_from_phdrs(
    info: &libc::dl_phdr_info,
) -> Option<(Module<&'static [u8]>, TextRange)> {
    if info.dlpi_phdr.is_null() || info.dlpi_phnum == 0 {
        return None;
    }
    // SAFETY: see the caller's contract: dlpi_phnum headers at dlpi_phdr.
    let phdrs = unsafe { core::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let base = info.dlpi_addr as usize;
    let (tlo, thi, readable) = text_svma(phdrs)?;
    let text = TextRange {
        start: base.checked_add(tlo)?,
        end: base.checked_add(thi)?,
        readable,
    };
    let mut section_info = ExplicitModuleSectionInfo::<&'static [u8]> {
        base_svma: 0,
        text_svma: Some(tlo as u64..thi as u64),
        ..Default::default()
    };
    // SAFETY: inside the callback the module is loaded and its headers describe its mapping.
    unsafe { find_eh_frame(phdrs, base, &mut section_info) };
    // Without unwind data framehop uses its frame-pointer rule inside this module.
    let module = Module::new(
        // SAFETY: the loader's dlpi_name, null or NUL-terminated.
        unsafe { module_name(info) },
        text.start as u64..text.end as u64,
        base as u64,
        section_info,
    );
    Some((module, text))
}

/// The module's path as the loader names it (empty for the executable).
///
/// # Safety
/// `info.dlpi_name` is null or a NUL-terminated string (as `dl_iterate_phdr` passes it).
unsafe fn module_name(info: &libc::dl_phdr_info) -> String {
    if info.dlpi_name.is_null() {
        return String::new();
    }
    // SAFETY: dlpi_name is a NUL-terminated string owned by the loader.
    unsafe { CStr::from_ptr(info.dlpi_name) }
        .to_string_lossy()
        .into_owned()
}

/// The SVMA range `[lo, hi)` spanning the executable `PT_LOAD` segments, and whether they are
/// all readable; `None` if there is none.
fn text_svma(phdrs: &[libc::Elf64_Phdr]) -> Option<(usize, usize, bool)> {
    let (mut tlo, mut thi, mut readable) = (usize::MAX, 0usize, true);
    for p in phdrs
        .iter()
        .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_X != 0)
    {
        tlo = tlo.min(p.p_vaddr as usize);
        thi = thi.max((p.p_vaddr + p.p_memsz) as usize);
        readable &= p.p_flags & libc::PF_R != 0;
    }
    (tlo < thi).then_some((tlo, thi, readable))
}

/// The readable `PT_LOAD` segment (SVMA range) containing `svma`.
fn load_containing(phdrs: &[libc::Elf64_Phdr], svma: usize) -> Option<Range<usize>> {
    phdrs.iter().find_map(|p| {
        let (s, e) = (p.p_vaddr as usize, (p.p_vaddr + p.p_memsz) as usize);
        (p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_R != 0 && s <= svma && svma < e)
            .then_some(s..e)
    })
}

/// Sets the `.eh_frame_hdr` and `.eh_frame` of `section_info` (SVMA ranges and mapped
/// bytes), found from the `PT_GNU_EH_FRAME` header; leaves them unset if either is missing or
/// does not lie in a readable `PT_LOAD` segment.
///
/// # Safety
/// `phdrs` are the program headers of a loaded module at `base`. The slices are kept as
/// `'static`: valid while the module stays loaded (see the module docs).
unsafe fn find_eh_frame(
    phdrs: &[libc::Elf64_Phdr],
    base: usize,
    section_info: &mut ExplicitModuleSectionInfo<&'static [u8]>,
) {
    let Some(h) = phdrs.iter().find(|p| p.p_type == libc::PT_GNU_EH_FRAME) else {
        return;
    };
    let (hdr_svma, hdr_len) = (h.p_vaddr as usize, h.p_memsz as usize);
    match load_containing(phdrs, hdr_svma) {
        Some(load) if hdr_svma + hdr_len <= load.end => {}
        _ => return,
    }
    // SAFETY: [base+hdr_svma, +hdr_len) lies in a readable PT_LOAD segment of a loaded
    // module (checked just above); the slice stays valid while it stays loaded.
    let hdr: &'static [u8] =
        unsafe { core::slice::from_raw_parts((base + hdr_svma) as *const u8, hdr_len) };
    let eh = eh_frame_ptr(hdr, hdr_svma as u64).and_then(|eh_svma| {
        let eh_svma = usize::try_from(eh_svma).ok()?;
        let load = load_containing(phdrs, eh_svma)?;
        Some((eh_svma, load.end - eh_svma))
    });
    let Some((eh_svma, eh_len)) = eh else {
        return;
    };
    // SAFETY: [base+eh_svma, +eh_len) is the tail of a readable PT_LOAD segment of a loaded
    // module (from load_containing). .eh_frame has no length in the header, so the slice
    // runs to the segment end; FDE offsets come from the hdr.
    let eh: &'static [u8] =
        unsafe { core::slice::from_raw_parts((base + eh_svma) as *const u8, eh_len) };
    section_info.eh_frame_hdr_svma = Some(hdr_svma as u64..(hdr_svma + hdr_len) as u64);
    section_info.eh_frame_hdr = Some(hdr);
    section_info.eh_frame_svma = Some(eh_svma as u64..(eh_svma + eh_len) as u64);
    section_info.eh_frame = Some(eh);
}

/// Decode `eh_frame_ptr` (the SVMA of `.eh_frame`) from an `.eh_frame_hdr` at `hdr_svma`.
/// Layout: version (1), eh_frame_ptr_enc, fde_count_enc, table_enc, then eh_frame_ptr.
fn eh_frame_ptr(hdr: &[u8], hdr_svma: u64) -> Option<u64> {
    if hdr.len() < 4 || hdr[0] != 1 {
        return None;
    }
    let enc = hdr[1];
    let field = &hdr[4..];
    let field_svma = hdr_svma + 4;
    let raw: i64 = match enc & 0x0f {
        0x00 | 0x04 | 0x0c => i64::from_le_bytes(field.get(..8)?.try_into().ok()?),
        0x02 => u16::from_le_bytes(field.get(..2)?.try_into().ok()?) as i64,
        0x03 => u32::from_le_bytes(field.get(..4)?.try_into().ok()?) as i64,
        0x0a => i16::from_le_bytes(field.get(..2)?.try_into().ok()?) as i64,
        0x0b => i32::from_le_bytes(field.get(..4)?.try_into().ok()?) as i64,
        _ => return None, // omit (0xff), LEB128: never produced by linkers here
    };
    let base = match enc & 0x70 {
        0x00 => 0,
        0x10 => field_svma, // pcrel: relative to the field itself
        0x30 => hdr_svma,   // datarel: relative to .eh_frame_hdr
        _ => return None,
    };
    if enc & 0x80 != 0 {
        return None; // indirect
    }
    base.checked_add_signed(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eh_frame_ptr_encodings() {
        // pcrel | sdata4, eh_frame 0x100 bytes before the hdr.
        let mut hdr = vec![1, 0x1b, 0x03, 0x3b];
        hdr.extend_from_slice(&(-0x104i32).to_le_bytes());
        assert_eq!(eh_frame_ptr(&hdr, 0x2000), Some(0x2000 - 0x100));
        // datarel | udata4
        let mut hdr = vec![1, 0x33, 0x03, 0x3b];
        hdr.extend_from_slice(&0x40u32.to_le_bytes());
        assert_eq!(eh_frame_ptr(&hdr, 0x2000), Some(0x2040));
        // absptr
        let mut hdr = vec![1, 0x00, 0x03, 0x3b];
        hdr.extend_from_slice(&0x1234u64.to_le_bytes());
        assert_eq!(eh_frame_ptr(&hdr, 0x2000), Some(0x1234));
        assert_eq!(eh_frame_ptr(&[2, 0x1b, 3, 0x3b, 0, 0, 0, 0], 0), None);
        assert_eq!(eh_frame_ptr(&[1, 0xff, 3, 0x3b], 0), None);
    }

    #[test]
    fn state_knows_this_code_and_libc() {
        let s = get_or_build(true).expect("built");
        assert!(s.module_count() >= 2, "exe + libc at least");
        assert!(s.is_known(state_knows_this_code_and_libc as *const () as usize));
        assert!(s.is_known(libc::write as *const () as usize));
        assert!(!s.is_known(0x10));
        assert_ne!(s.restorer, 0, "std's SIGSEGV handler gives __restore_rt");
        assert!(s.is_sigreturn_trampoline(s.restorer) && s.has_restore_rt_code(s.restorer));
        assert!(!s.is_sigreturn_trampoline(state_knows_this_code_and_libc as *const () as usize));
        // Unchanged process: no new state.
        let before = published();
        let again = rebuild_if_changed().unwrap();
        assert!(published() == before || published() <= MAX_STATES);
        assert!(again.is_known(libc::write as *const () as usize));
    }

    #[test]
    fn child_forked_while_the_list_is_built_can_rebuild_it() {
        use crate::base::fork::test_support::in_child;
        let t = std::time::Duration::from_secs(30);
        // In a child of its own, so this test's raised flag is no other test's business.
        let code = in_child(t, || {
            get_or_build(true).expect("built");
            BUILDING.store(true, Ordering::Release); // a builder on a thread the fork drops
            in_child(t, || {
                // SAFETY: loads a plain C library (no constructors of interest).
                let h = unsafe { libc::dlopen(c"libz.so.1".as_ptr(), libc::RTLD_NOW) };
                if h.is_null() {
                    return 0; // not available: nothing to rebuild for
                }
                // SAFETY: h is a valid handle; looks up a function symbol.
                let f = unsafe { libc::dlsym(h, c"zlibVersion".as_ptr()) } as usize;
                let known = rebuild_if_changed().is_some_and(|s| s.is_known(f));
                i32::from(!known)
            })
            .unwrap_or(2)
        });
        assert_eq!(code, Some(0), "1: the library was not picked up; 2: a hang");
    }

    #[test]
    fn dlopen_is_picked_up_by_rebuild() {
        let before = get_or_build(true).expect("built");
        // SAFETY: loads a plain C library (no constructors of interest); never closed.
        let h = unsafe { libc::dlopen(c"libz.so.1".as_ptr(), libc::RTLD_NOW) };
        if h.is_null() {
            eprintln!("libz.so.1 not available; skipped");
            return;
        }
        // SAFETY: h is a valid handle; looks up a function symbol.
        let f = unsafe { libc::dlsym(h, c"zlibVersion".as_ptr()) } as usize;
        assert_ne!(f, 0);
        let after = rebuild_if_changed().expect("state");
        assert!(after.is_known(f), "dlopened library known after rebuild");
        if !before.is_known(f) {
            assert!(!core::ptr::eq(before, after), "a new state was published");
        }
    }
}
