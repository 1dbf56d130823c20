#[global_allocator]
static ALLOC: heaprof::ProfilingAllocator = heaprof::ProfilingAllocator::system();

#[inline(never)]
fn make_strings(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("string number {i}")).collect()
}

#[inline(never)]
fn big_vec() -> Vec<u64> {
    vec![7u64; 8 << 20]
}

fn main() {
    heaprof::set_sample_rate(4096);
    let s = make_strings(200_000);
    let v = big_vec();
    heaprof::write_heap_profile(std::fs::File::create("/tmp/smoke.pb.gz").unwrap()).unwrap();
    heaprof::lookup("heap")
        .unwrap()
        .write_to(std::fs::File::create("/tmp/smoke.txt").unwrap(), 1)
        .unwrap();
    println!("{} {}", s.len(), v.len());
}
