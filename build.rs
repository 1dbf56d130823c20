//! One configuration flag, `heaprof_sanitizer`: set when the crate is built with a sanitizer
//! (`-Zsanitizer=address`, `thread`, ...). A sanitizer's runtime intercepts
//! `pthread_create` itself; heaprof's interposer (`src/threadcreate.rs`) would take the
//! symbol from it and call glibc's directly, so the sanitizer would never learn of the new
//! thread (AddressSanitizer aborts at its first join). Under a sanitizer the interposer is
//! left out and the `threadcreate` profile stays empty.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(heaprof_sanitizer)");
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_CFG_SANITIZE").is_some() {
        println!("cargo::rustc-cfg=heaprof_sanitizer");
    }
}
