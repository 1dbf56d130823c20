//! heaprof's load-time constructors ran before `main`: the `HEAPROF_*` snapshot is taken and
//! the fork protocol is installed. This test binary does not use heaprof's allocator, so
//! nothing else reads heaprof's environment or touches its locks before the tests look.

#[test]
fn the_environment_snapshot_is_taken_before_main() {
    assert!(heaprof::__private::env_snapshot_taken());
}

#[test]
fn the_fork_protocol_is_installed_before_main() {
    assert!(heaprof::__private::fork_protocol_installed());
}
