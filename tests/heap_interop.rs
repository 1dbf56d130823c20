//! The reference reader, `go tool pprof`, reads both heap formats and names our functions.

mod common;

use std::hint::black_box;

#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

#[inline(never)]
fn interop_site_alpha() -> Vec<Vec<u8>> {
    black_box((0..2000).map(|i| vec![i as u8; 1000]).collect())
}

#[inline(never)]
fn interop_site_beta() -> Vec<u8> {
    vec![3u8; 8 << 20]
}

#[test]
fn go_tool_pprof_reads_debug0_and_debug1() {
    heaprof::set_heap_profile_rate(4096);
    black_box(vec![0u8; 4 << 20]);
    let a = interop_site_alpha();
    let b = interop_site_beta();

    let heap = heaprof::lookup("heap").unwrap();
    let allocs = heaprof::lookup("allocs").unwrap();
    let mut pb = Vec::new();
    heap.write_to(&mut pb, 0).unwrap();
    let mut pb_allocs = Vec::new();
    allocs.write_to(&mut pb_allocs, 0).unwrap();
    let mut txt = Vec::new();
    heap.write_to(&mut txt, 1).unwrap();
    let text = String::from_utf8(txt.clone()).unwrap();
    assert!(
        text.starts_with("heap profile: "),
        "{}",
        &text[..100.min(text.len())]
    );
    assert!(
        text.contains("interop_site_beta"),
        "debug=1 names frames in comments"
    );
    assert!(text.contains("--- Memory map: ---"));

    // Our own decoding: default sample types as Go sets them.
    let p = common::decode(&pb_allocs);
    assert_eq!(
        p.string_table[p.default_sample_type as usize],
        "alloc_space"
    );
    let p = common::decode(&pb);
    assert_eq!(
        p.default_sample_type, 0,
        "heap leaves the default (last: inuse_space)"
    );
    assert!(
        common::top_names(&p)
            .iter()
            .any(|n| n.ends_with("interop_site_beta")),
        "top frame is the allocating function"
    );

    let f0 = common::write_scratch("heap.pb.gz", &pb);
    let f1 = common::write_scratch("heap.txt", &txt);
    let Some(raw) = common::go_pprof(&["-raw", &f0]) else {
        return;
    };
    assert!(
        raw.contains("interop_site_alpha") && raw.contains("interop_site_beta"),
        "{raw}"
    );
    assert!(
        raw.contains("alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes"),
        "{raw}"
    );

    let top = common::go_pprof(&["-top", "-sample_index=inuse_space", &f0]).unwrap();
    let beta_line = top
        .lines()
        .find(|l| l.contains("interop_site_beta"))
        .unwrap_or_else(|| panic!("{top}"));
    // 8 MiB, sampled with p ≈ 1: pprof prints it as 8MB.
    assert!(beta_line.trim_start().starts_with("8MB"), "{beta_line}");

    // The legacy text: pprof parses it (rescaling with heap/2R) and maps addresses through
    // the memory map to this test binary.
    let top1 = common::go_pprof(&["-top", "-sample_index=inuse_space", &f1]).unwrap();
    assert!(top1.contains("Type: inuse_space"), "{top1}");
    let raw1 = common::go_pprof(&["-raw", &f1]).unwrap();
    assert!(raw1.contains("interop_site_beta"), "{raw1}");
    black_box((a, b));
}
