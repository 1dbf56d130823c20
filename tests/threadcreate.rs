//! The `threadcreate` profile records the creating stack of every OS thread: std threads, a
//! rayon pool, raw `pthread_create` (C-style, including a thread that leaves by
//! `pthread_exit` and one created before `main`), and `go tool pprof` reads both formats.

mod common;

use std::ffi::c_void;
use std::hint::black_box;
use std::process::Command;

use heaprof::__private::proto;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

fn threadcreate() -> heaprof::Profile {
    heaprof::lookup("threadcreate").expect("predefined")
}

fn decoded() -> proto::Profile {
    let mut out = Vec::new();
    threadcreate().write_to(&mut out, 0).unwrap();
    common::decode(&out)
}

/// Threads whose creation stack contains a function ending in `site`.
fn threads_from(p: &proto::Profile, site: &str) -> i64 {
    p.sample
        .iter()
        .filter(|s| common::stack_names(p, s).iter().any(|n| n.ends_with(site)))
        .map(|s| s.value[0])
        .sum()
}

/// The top frames of the samples whose stacks contain `site`.
fn tops_from(p: &proto::Profile, site: &str) -> Vec<String> {
    p.sample
        .iter()
        .map(|s| common::stack_names(p, s))
        .filter(|n| n.iter().any(|n| n.ends_with(site)))
        .map(|n| n[0].clone())
        .collect()
}

#[inline(never)]
fn spawn_std_site(n: usize) {
    let hs: Vec<_> = (0..n).map(|i| std::thread::spawn(move || i * 2)).collect();
    let sum: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(sum, n * (n - 1));
}

#[test]
fn std_threads_are_counted_at_the_spawning_function() {
    let before = threadcreate().count();
    spawn_std_site(5);
    assert!(threadcreate().count() >= before + 5);
    let p = decoded();
    let st = &p.string_table;
    assert_eq!(st[p.sample_type[0].r#type as usize], "threadcreate");
    assert_eq!(st[p.sample_type[0].unit as usize], "count");
    assert_eq!(p.period, 1);
    assert_eq!(threads_from(&p, "spawn_std_site"), 5);
    // std's spawn plumbing is trimmed: the top frame is the function that spawned.
    for top in tops_from(&p, "spawn_std_site") {
        // `spawn_std_site` or its closure (debug builds keep the closure's frame).
        assert!(top.contains("spawn_std_site"), "{top}");
    }
}

#[inline(never)]
fn rayon_pool_site() -> rayon::ThreadPool {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    black_box(pool)
}

#[test]
fn rayon_pool_threads_are_counted() {
    let pool = rayon_pool_site();
    let sum: u64 = pool.install(|| {
        use rayon::prelude::*;
        (0..1000u64).into_par_iter().sum()
    });
    assert_eq!(sum, 999 * 1000 / 2);
    let p = decoded();
    assert_eq!(threads_from(&p, "rayon_pool_site"), 3);
    let tops = tops_from(&p, "rayon_pool_site");
    assert!(
        tops.iter()
            .all(|t| t.starts_with("<rayon_core::") || t.starts_with("rayon_core::")),
        "{tops:?}"
    );
}

extern "C" fn c_start(arg: *mut c_void) -> *mut c_void {
    (arg as usize * 3) as *mut c_void
}

extern "C" fn c_start_exits(arg: *mut c_void) -> *mut c_void {
    // SAFETY: pthread_exit ends this thread (created by pthread_create) with `arg`.
    unsafe { libc::pthread_exit(arg) }
}

/// Creates a thread the way C code does and returns what `pthread_join` gave back.
#[inline(never)]
fn c_style_site(start: extern "C" fn(*mut c_void) -> *mut c_void, arg: usize) -> usize {
    let mut t: libc::pthread_t = 0;
    let mut ret: *mut c_void = std::ptr::null_mut();
    // SAFETY: `t` is writable, attributes are default (null), `start` is a valid start
    // routine, and the thread is joined below.
    let rc = unsafe { libc::pthread_create(&mut t, std::ptr::null(), start, arg as *mut c_void) };
    assert_eq!(rc, 0);
    // SAFETY: `t` is a joinable thread created above; `ret` is writable.
    assert_eq!(unsafe { libc::pthread_join(t, &mut ret) }, 0);
    black_box(ret as usize)
}

#[test]
fn raw_pthread_create_is_counted_and_passes_arguments_through() {
    assert_eq!(
        c_style_site(c_start, 14),
        42,
        "arg and return value pass through"
    );
    assert_eq!(
        c_style_site(c_start_exits, 7),
        7,
        "pthread_exit unwinds through the start trampoline"
    );
    let p = decoded();
    assert_eq!(threads_from(&p, "c_style_site"), 2);
    for top in tops_from(&p, "c_style_site") {
        assert!(top.ends_with("c_style_site"), "{top}");
    }
}

/// Failure passes through unchanged: an invalid attribute set is refused as by glibc.
#[test]
fn a_failed_creation_is_not_counted() {
    let p = decoded();
    let before = threads_from(&p, "failing_site");
    let rc = failing_site();
    assert_ne!(rc, 0);
    assert_eq!(threads_from(&decoded(), "failing_site"), before);
}

#[inline(never)]
fn failing_site() -> i32 {
    // SAFETY: attr is initialised, then given a stack size glibc refuses at create time
    // (larger than the address space), so no thread is created.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_attr_init(&mut attr), 0);
        let rc_size = libc::pthread_attr_setstacksize(&mut attr, usize::MAX / 2);
        let mut t: libc::pthread_t = 0;
        let rc = if rc_size == 0 {
            libc::pthread_create(&mut t, &attr, c_start, std::ptr::null_mut())
        } else {
            rc_size
        };
        libc::pthread_attr_destroy(&mut attr);
        black_box(rc)
    }
}

#[inline(never)]
fn before_main_site() {
    let mut t: libc::pthread_t = 0;
    // SAFETY: as in `c_style_site`: writable `t`, default attributes, joined below.
    let rc =
        unsafe { libc::pthread_create(&mut t, std::ptr::null(), c_start, std::ptr::null_mut()) };
    assert_eq!(rc, 0);
    // SAFETY: `t` is joinable; a null result pointer is allowed.
    assert_eq!(unsafe { libc::pthread_join(t, std::ptr::null_mut()) }, 0);
    black_box(());
}

extern "C" fn before_main_ctor() {
    before_main_site();
}

/// A C-style constructor that creates a thread before `main` (and before the test harness).
#[used]
#[link_section = ".init_array"]
static BEFORE_MAIN: extern "C" fn() = before_main_ctor;

#[test]
fn threads_created_before_main_are_counted() {
    assert_eq!(threads_from(&decoded(), "before_main_site"), 1);
}

#[inline(never)]
fn spawn_interop_site() {
    std::thread::spawn(|| ()).join().unwrap();
    black_box(());
}

#[test]
fn go_tool_pprof_reads_debug0_and_debug1() {
    spawn_interop_site();
    let mut pb = Vec::new();
    threadcreate().write_to(&mut pb, 0).unwrap();
    let mut txt = Vec::new();
    threadcreate().write_to(&mut txt, 1).unwrap();
    let text = String::from_utf8(txt.clone()).unwrap();
    let header = text.lines().next().unwrap();
    let total: u64 = header
        .strip_prefix("threadcreate profile: total ")
        .unwrap_or_else(|| panic!("{header}"))
        .parse()
        .unwrap();
    assert!(total >= 2);
    assert!(text.contains("spawn_interop_site"), "{text}");

    let f0 = common::write_scratch("threadcreate.pb.gz", &pb);
    let f1 = common::write_scratch("threadcreate.txt", &txt);
    let Some(raw) = common::go_pprof(&["-raw", &f0]) else {
        return;
    };
    assert!(raw.contains("threadcreate/count"), "{raw}");
    assert!(raw.contains("spawn_interop_site"), "{raw}");
    let exe = std::env::current_exe().unwrap();
    let raw = common::go_pprof(&["-raw", exe.to_str().unwrap(), &f1]).unwrap();
    assert!(raw.contains("spawn_interop_site"), "{raw}");
}

/// A `dlopen`ed C library's `pthread_create` is intercepted too: the linker exports the
/// executable's `pthread_create` dynamically (a shared library on the link line, libc, also
/// defines it), so the library's GOT binds to ours.
#[test]
fn dlopened_library_threads_are_seen() {
    let dir = common::scratch("dl");
    let c = dir.with_extension("c");
    let so = dir.with_extension("so");
    std::fs::write(
        &c,
        "#include <pthread.h>\n\
         static void *run(void *a) { return a; }\n\
         int dl_make_thread(void) { pthread_t t; void *r;\n\
           if (pthread_create(&t, 0, run, (void *)5)) return -1;\n\
           pthread_join(t, &r); return (int)(long)r; }\n",
    )
    .unwrap();
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&so)
        .arg(&c)
        .arg("-lpthread")
        .status();
    if !built.is_ok_and(|s| s.success()) {
        assert!(std::env::var_os("CI").is_none(), "cc is needed in CI");
        eprintln!("no C compiler; skipped");
        return;
    }
    let path = std::ffi::CString::new(so.to_str().unwrap()).unwrap();
    // SAFETY: loads the library just built (no constructors); never closed.
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
    assert!(!h.is_null());
    // SAFETY: `h` is a valid handle and the name is NUL-terminated.
    let f = unsafe { libc::dlsym(h, c"dl_make_thread".as_ptr()) };
    assert!(!f.is_null());
    // SAFETY: `dl_make_thread` has this C signature (defined above).
    let f: extern "C" fn() -> i32 = unsafe { std::mem::transmute(f) };
    assert_eq!(dl_site(f), 5);
    let p = decoded();
    assert_eq!(threads_from(&p, "dl_site"), 1);
    // The top frame is in the library (located by its mapping: the in-process symbolizer
    // may not name code of a library loaded after its first use).
    let sample = p
        .sample
        .iter()
        .find(|s| {
            common::stack_names(&p, s)
                .iter()
                .any(|n| n.ends_with("dl_site"))
        })
        .unwrap();
    let top = p
        .location
        .iter()
        .find(|l| l.id == sample.location_id[0])
        .unwrap();
    let mapping = p.mapping.iter().find(|m| m.id == top.mapping_id).unwrap();
    let file = &p.string_table[mapping.filename as usize];
    assert!(file.ends_with("dl.so"), "top frame in {file}");
}

#[inline(never)]
fn dl_site(f: extern "C" fn() -> i32) -> i32 {
    black_box(f())
}
