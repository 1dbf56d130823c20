//! The `HEAPROF_*` snapshot is taken by the load-time constructor, before `main`: this test
//! binary does not use heaprof's allocator, so nothing else reads heaprof's environment
//! before the test looks.

#[test]
fn the_environment_snapshot_is_taken_before_main() {
    assert!(heaprof::__private::env_snapshot_taken());
}
