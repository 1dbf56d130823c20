//! `heaprof::Error` as the Rust API guidelines want it (C-GOOD-ERR): `Send + Sync +
//! 'static`, a variant per kind of failure, and an OS failure that names the operation and
//! keeps the OS's `io::Error` as its `source()`.

use std::error::Error as _;
use std::io::ErrorKind;

fn assert_good_error<E: std::error::Error + Send + Sync + 'static>() {}

#[test]
fn error_is_send_sync_static() {
    assert_good_error::<heaprof::Error>();
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(heaprof::Error::CpuProfileInUse);
    assert_eq!(boxed.to_string(), "cpu profiling already in use");
}

#[test]
fn a_taken_port_is_an_os_failure_with_its_source() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let e = heaprof::http::serve(addr).unwrap_err();
    let heaprof::Error::Os { op, source } = &e else {
        panic!("not Error::Os: {e:?}");
    };
    assert!(op.contains(&addr.to_string()), "{op}");
    assert_eq!(source.kind(), ErrorKind::AddrInUse);
    let src = e.source().expect("source()");
    let io = src.downcast_ref::<std::io::Error>().expect("an io::Error");
    assert_eq!(io.kind(), ErrorKind::AddrInUse);
    assert!(e.to_string().starts_with(op.as_str()), "{e}");
}

#[test]
fn a_dump_directory_that_is_not_there_names_the_directory() {
    let e = heaprof::dump_on_signal(heaprof::DumpConfig {
        dir: "/no/such/heaprof/dir".into(),
        ..Default::default()
    })
    .unwrap_err();
    match &e {
        heaprof::Error::Os { op, source } => {
            assert_eq!(op, "dump directory /no/such/heaprof/dir");
            assert_eq!(source.kind(), ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    assert!(e.source().is_some());
    // A configuration mistake has no OS error behind it.
    let e = heaprof::dump_on_signal(heaprof::DumpConfig {
        dir: std::env::temp_dir(),
        prefix: "a/b".into(),
        ..Default::default()
    })
    .unwrap_err();
    assert!(matches!(e, heaprof::Error::InvalidConfig(_)), "{e:?}");
    assert!(e.source().is_none());
}

#[test]
fn a_failed_profile_write_is_an_io_error_with_its_source() {
    let e = heaprof::Error::from(std::io::Error::new(ErrorKind::WriteZero, "disk full"));
    assert_eq!(e.to_string(), "writing profile: disk full");
    assert_eq!(
        e.source()
            .unwrap()
            .downcast_ref::<std::io::Error>()
            .unwrap()
            .kind(),
        ErrorKind::WriteZero
    );
}
