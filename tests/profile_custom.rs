//! Custom profiles: registry semantics, skip semantics, concurrency, the RAII guard, and
//! the written formats read back by our decoder and by `go tool pprof`.

mod common;

use std::sync::Arc;

use heaprof::{Error, Profile};

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

fn names() -> Vec<String> {
    heaprof::profiles()
        .iter()
        .map(|p| p.name().to_string())
        .collect()
}

#[test]
fn registry_is_sorted_and_knows_predefined_and_custom_profiles() {
    let _z = Profile::new("test.reg.zeta");
    let _a = Profile::new("test.reg.alpha");
    let n = names();
    let mut sorted = n.clone();
    sorted.sort();
    assert_eq!(n, sorted);
    for want in [
        "allocs",
        "heap",
        "threadcreate",
        "test.reg.alpha",
        "test.reg.zeta",
    ] {
        assert!(n.iter().any(|x| x == want), "{want} missing from {n:?}");
    }
    assert!(!n.iter().any(|x| x == "cpu"), "cpu is not a Profile");
    assert!(heaprof::lookup("test.reg.none").is_none());
    let found = heaprof::lookup("test.reg.alpha").unwrap();
    assert_eq!(found.name(), "test.reg.alpha");
    // A looked-up handle is the same profile.
    found.add(1u32, 0);
    assert_eq!(_a.count(), 1);
}

#[test]
fn duplicate_and_invalid_names() {
    let _p = Profile::new("test.dup");
    assert!(matches!(
        Profile::try_new("test.dup"),
        Err(Error::DuplicateProfile(n)) if n == "test.dup"
    ));
    for predefined in ["heap", "allocs", "threadcreate"] {
        assert!(matches!(
            Profile::try_new(predefined),
            Err(Error::DuplicateProfile(_))
        ));
    }
    for bad in ["", "has space", "tab\there"] {
        let e = Profile::try_new(bad).unwrap_err();
        assert!(matches!(e, Error::InvalidProfileName(_)), "{bad:?}: {e}");
    }
    let r = std::panic::catch_unwind(|| Profile::new("test.dup"));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("already exists"), "{msg}");
    assert!(std::panic::catch_unwind(|| Profile::new("")).is_err());
}

#[test]
fn duplicate_keys_and_predefined_profiles_refuse_add() {
    let p = Profile::new("test.keys");
    p.add(7usize, 0);
    assert!(matches!(p.try_add(7usize, 0), Err(Error::DuplicateKey(n)) if n == "test.keys"));
    let p2 = p.clone();
    let r = std::panic::catch_unwind(move || p2.add(7usize, 0));
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    assert!(msg.contains("key already added"), "{msg}");
    p.try_add(7u64, 0).expect("another type is another key");
    assert_eq!(p.count(), 2);
    p.remove(&7usize);
    p.remove(&7usize); // absent: no-op
    assert!(!p.try_remove(&7usize).unwrap());
    assert_eq!(p.count(), 1);
    p.add(7usize, 0); // re-adding after removal is fine

    for name in ["heap", "allocs", "threadcreate"] {
        let pre = heaprof::lookup(name).unwrap();
        assert!(matches!(pre.try_add(1u8, 0), Err(Error::PredefinedProfile(n)) if n == name));
        assert!(matches!(
            pre.try_remove(&1u8),
            Err(Error::PredefinedProfile(_))
        ));
        let a = pre.clone();
        assert!(std::panic::catch_unwind(move || a.add(1u8, 0)).is_err());
        let r = pre.clone();
        assert!(std::panic::catch_unwind(move || r.remove(&1u8)).is_err());
    }
}

#[test]
fn track_removes_on_drop() {
    let p = Profile::new("test.track");
    {
        let g = p.track(String::from("conn-1"));
        assert_eq!(g.key(), "conn-1");
        assert_eq!(p.count(), 1);
        assert!(matches!(
            p.try_track(String::from("conn-1")),
            Err(Error::DuplicateKey(_))
        ));
        let _g2 = p.try_track(String::from("conn-2")).unwrap();
        assert_eq!(p.count(), 2);
    }
    assert_eq!(p.count(), 0);
}

/// The top frame of the only sample of `p` (debug=0 decoded).
fn only_stack(p: &Profile) -> Vec<String> {
    let mut out = Vec::new();
    p.write_to(&mut out, 0).unwrap();
    let d = common::decode(&out);
    assert_eq!(d.sample.len(), 1, "one stack expected");
    common::stack_names(&d, &d.sample[0])
}

#[inline(never)]
fn skip_site_inner(p: &Profile, key: u32, skip: usize) {
    p.add(key, skip);
    std::hint::black_box(());
}

#[inline(never)]
fn skip_site_outer(p: &Profile, key: u32, skip: usize) {
    skip_site_inner(p, key, skip);
    std::hint::black_box(());
}

#[inline(never)]
fn try_add_site(p: &Profile) {
    p.try_add(1u8, 0).unwrap();
    std::hint::black_box(());
}

#[inline(never)]
fn track_site(p: &Profile) -> heaprof::Tracked<u8> {
    let g = p.track(2u8);
    std::hint::black_box(&g);
    g
}

#[test]
fn skip_zero_starts_at_the_caller_of_add_and_one_at_its_caller() {
    let p0 = Profile::new("test.skip0");
    skip_site_outer(&p0, 1, 0);
    let s = only_stack(&p0);
    assert!(s[0].ends_with("skip_site_inner"), "{s:?}");
    assert!(s[1].ends_with("skip_site_outer"), "{s:?}");

    let p1 = Profile::new("test.skip1");
    skip_site_outer(&p1, 1, 1);
    let s = only_stack(&p1);
    assert!(s[0].ends_with("skip_site_outer"), "{s:?}");
    assert!(!s.iter().any(|n| n.ends_with("skip_site_inner")), "{s:?}");

    let pt = Profile::new("test.skip.try");
    try_add_site(&pt);
    let s = only_stack(&pt);
    assert!(s[0].ends_with("try_add_site"), "{s:?}");

    let pg = Profile::new("test.skip.track");
    let _g = track_site(&pg);
    let s = only_stack(&pg);
    assert!(s[0].ends_with("track_site"), "{s:?}");

    // A skip past the whole stack records the empty-stack pseudo-frame, not a crash.
    let pe = Profile::new("test.skip.huge");
    pe.add(1u8, 10_000);
    let s = only_stack(&pe);
    assert_eq!(s, vec!["heaprof::empty_stack".to_string()]);
    let mut txt = Vec::new();
    pe.write_to(&mut txt, 1).unwrap();
    let txt = String::from_utf8(txt).unwrap();
    assert!(txt.contains("\n1 @ 0x"), "{txt}");
}

#[inline(never)]
fn concurrent_site(p: &Profile, t: usize, n: usize) {
    for i in 0..n {
        p.add((t, i), 0);
        if i % 2 == 1 {
            p.remove(&(t, i - 1));
        }
    }
}

#[test]
fn concurrent_adds_and_removes_give_an_exact_count() {
    const THREADS: usize = 4;
    const KEYS: usize = 100_000 / THREADS;
    let p = Arc::new(Profile::new("test.concurrent"));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let p = Arc::clone(&p);
            std::thread::spawn(move || concurrent_site(&p, t, KEYS))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Every even key was removed, every odd one stays.
    assert_eq!(p.count(), THREADS * KEYS / 2);
    let mut out = Vec::new();
    p.write_to(&mut out, 0).unwrap();
    let d = common::decode(&out);
    let total: i64 = d.sample.iter().map(|s| s.value[0]).sum();
    assert_eq!(total, (THREADS * KEYS / 2) as i64);
    let site = common::totals_by_site(&d, &["concurrent_site"]);
    assert_eq!(site["concurrent_site"][0], total);
    // Remove the rest from two threads at once.
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let p = Arc::clone(&p);
            std::thread::spawn(move || {
                for i in (1..KEYS).step_by(2) {
                    p.remove(&(t, i));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(p.count(), 0);
}

#[inline(never)]
fn interop_open_site(p: &Profile, n: usize) {
    for i in 0..n {
        p.add(i, 0);
    }
    // Not a tail call: a tail call would take this frame off the recorded stack.
    std::hint::black_box(());
}

#[inline(never)]
fn interop_other_site(p: &Profile) {
    p.add(usize::MAX, 0);
    std::hint::black_box(());
}

#[test]
fn written_profiles_follow_go_and_go_tool_pprof_reads_them() {
    let p = Profile::new("test.interop_handles");
    interop_open_site(&p, 3);
    interop_other_site(&p);
    let mut pb = Vec::new();
    p.write_to(&mut pb, 0).unwrap();
    let d = common::decode(&pb);
    let st = &d.string_table;
    assert_eq!(d.sample_type.len(), 1);
    assert_eq!(st[d.sample_type[0].r#type as usize], "test.interop_handles");
    assert_eq!(st[d.sample_type[0].unit as usize], "count");
    let pt = d.period_type.as_ref().unwrap();
    assert_eq!(st[pt.r#type as usize], "test.interop_handles");
    assert_eq!(st[pt.unit as usize], "count");
    assert_eq!(d.period, 1);
    assert!(d.time_nanos > 0);
    // Sorted by count desc (an optimizer may split a site into several call PCs, hence
    // several samples: compare per site).
    let values: Vec<i64> = d.sample.iter().map(|s| s.value[0]).collect();
    assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
    let sites = common::totals_by_site(&d, &["interop_open_site", "interop_other_site"]);
    assert_eq!(sites["interop_open_site"], vec![3]);
    assert_eq!(sites["interop_other_site"], vec![1]);
    assert_eq!(sites.len(), 2, "{sites:?}");
    assert!(common::top_names(&d)
        .iter()
        .all(|n| n.ends_with("interop_open_site") || n.ends_with("interop_other_site")));

    let mut txt = Vec::new();
    p.write_to(&mut txt, 1).unwrap();
    let mut txt2 = Vec::new();
    p.write_to(&mut txt2, 7).unwrap();
    let text = String::from_utf8(txt.clone()).unwrap();
    // Addresses differ in nothing between the two writes: higher debug behaves as 1.
    assert_eq!(text, String::from_utf8(txt2).unwrap());
    assert!(
        text.starts_with("test.interop_handles profile: total 4\n"),
        "{text}"
    );
    assert!(text.contains("interop_open_site"), "{text}");
    assert!(text.contains("--- Memory map: ---"));

    let f0 = common::write_scratch("custom.pb.gz", &pb);
    let f1 = common::write_scratch("custom.txt", &txt);
    let Some(raw) = common::go_pprof(&["-raw", &f0]) else {
        return;
    };
    assert!(raw.contains("test.interop_handles/count"), "{raw}");
    assert!(
        raw.contains("interop_open_site") && raw.contains("interop_other_site"),
        "{raw}"
    );
    let exe = std::env::current_exe().unwrap();
    let raw = common::go_pprof(&["-raw", exe.to_str().unwrap(), &f1]).unwrap();
    assert!(raw.contains("interop_open_site"), "{raw}");
    assert!(raw.contains("interop_other_site"), "{raw}");
    let top = common::go_pprof(&["-top", exe.to_str().unwrap(), &f1]).unwrap();
    let line = top
        .lines()
        .find(|l| l.contains("interop_open_site"))
        .unwrap_or_else(|| panic!("{top}"));
    let flat: i64 = line.split_whitespace().next().unwrap().parse().unwrap();
    assert_eq!(flat, 3, "{line}");
}
