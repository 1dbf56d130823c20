//! Every public type implements `Debug` (Rust API guidelines, C-DEBUG), and the manual
//! implementations show what a reader needs: a label set's pairs, not its interned id.
//!
//! The list below fails to compile when a type loses `Debug`; `#![warn(missing_debug_implementations)]`
//! in lib.rs (an error under CI's `-D warnings`) catches a new public type without one.

use std::fmt::Debug;

fn assert_debug<T: Debug + ?Sized>() {}

#[test]
fn every_public_type_is_debug() {
    assert_debug::<heaprof::ProfilingAllocator>();
    assert_debug::<heaprof::ProfilingAllocator<std::alloc::System>>();
    assert_debug::<heaprof::CpuProfile>();
    assert_debug::<heaprof::Profile>();
    assert_debug::<heaprof::Tracked<u64>>();
    assert_debug::<heaprof::Labels>();
    assert_debug::<heaprof::LabelGuard>();
    assert_debug::<heaprof::Labeled<std::future::Ready<()>>>();
    assert_debug::<heaprof::DumpConfig>();
    assert_debug::<heaprof::DumpHandle>();
    assert_debug::<heaprof::DumpStats>();
    assert_debug::<heaprof::RssThreshold>();
    assert_debug::<heaprof::EnvInit>();
    assert_debug::<heaprof::Error>();
    assert_debug::<heaprof::ProfileData>();
    assert_debug::<heaprof::SampleType>();
    assert_debug::<heaprof::StackSample>();
    assert_debug::<heaprof::sync::Mutex<u8>>();
    assert_debug::<heaprof::sync::MutexGuard<'static, u8>>();
    assert_debug::<heaprof::sync::RwLock<u8>>();
    assert_debug::<heaprof::sync::RwLockReadGuard<'static, u8>>();
    assert_debug::<heaprof::sync::RwLockWriteGuard<'static, u8>>();
    assert_debug::<heaprof::sync::Condvar>();
    assert_debug::<heaprof::http::Response>();
    assert_debug::<heaprof::http::ServerHandle>();
    assert_debug::<heaprof::http::ServerConfig>();
    assert_debug::<heaprof::http::ServerStats>();
    assert_debug::<heaprof::http::Request<'static>>();
}

#[test]
fn label_types_show_their_pairs() {
    let l = heaprof::Labels::new(&[("tenant", "acme"), ("request", "checkout")]);
    assert_eq!(
        format!("{l:?}"),
        r#"Labels { pairs: {"request": "checkout", "tenant": "acme"} }"#
    );
    assert_eq!(
        format!("{:?}", heaprof::Labels::empty()),
        "Labels { pairs: {} }"
    );
    let outer = heaprof::Labels::new(&[("job", "outer")]);
    let _o = outer.enter();
    let g = l.enter();
    assert_eq!(
        format!("{g:?}"),
        r#"LabelGuard { restores: Labels { pairs: {"job": "outer"} } }"#
    );
    let fut = heaprof::Labeled::new(l, std::future::ready(1));
    assert_eq!(
        format!("{fut:?}"),
        r#"Labeled { labels: Labels { pairs: {"request": "checkout", "tenant": "acme"} }, .. }"#
    );
}

#[test]
fn allocator_and_profile_debug() {
    let a = heaprof::ProfilingAllocator::system();
    assert_eq!(format!("{a:?}"), "ProfilingAllocator { inner: System }");
    let heap = heaprof::lookup("heap").expect("heap is predefined");
    assert_eq!(
        format!("{heap:?}"),
        r#"Profile { name: "heap", predefined: true }"#
    );
}
