//! The crate's error type.

use std::{fmt, io};

/// What went wrong in a heaprof call.
///
/// Each variant is a kind of failure a caller can match; an OS failure keeps the OS's
/// [`io::Error`] as [`source`](std::error::Error::source) and says which operation failed.
///
/// ```
/// use std::error::Error as _;
/// let missing = heaprof::DumpConfig {
///     dir: "/no/such/dir".into(),
///     ..Default::default()
/// };
/// match heaprof::dump_on_signal(missing) {
///     Err(heaprof::Error::Os { op, source }) => {
///         assert_eq!(op, "dump directory /no/such/dir");
///         assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
///     }
///     other => panic!("{other:?}"),
/// }
/// let e = heaprof::Error::Os {
///     op: "sigaction(SIGPROF)".into(),
///     source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
/// };
/// assert_eq!(e.to_string(), "sigaction(SIGPROF): permission denied");
/// assert!(e.source().is_some());
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value was out of range or came too late.
    InvalidConfig(String),
    /// `Profile::try_new` with a name already registered (predefined names included).
    DuplicateProfile(String),
    /// `Profile::try_new` with an empty name or one containing whitespace.
    InvalidProfileName(String),
    /// `try_add` with a key the profile already holds.
    DuplicateKey(String),
    /// `try_add` on a predefined profile, which only heaprof feeds.
    PredefinedProfile(String),
    /// Input that should be a pprof profile is not one (says which way it is not).
    InvalidProfile(String),
    /// Writing a profile failed: the writer's error.
    Io(io::Error),
    /// A system call or OS resource heaprof needed failed (a signal handler, a timer, a
    /// thread, memory, a socket, a directory).
    Os {
        /// What failed, e.g. `sigaction(SIGPROF)`, `spawning the heaprof-cpu thread`.
        op: String,
        /// The OS's error.
        source: io::Error,
    },
    /// `start_cpu_profile` while a CPU profile is running (Go's message).
    CpuProfileInUse,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig(m) => write!(f, "invalid heaprof configuration: {m}"),
            Error::DuplicateProfile(n) => write!(f, "a profile named {n:?} already exists"),
            Error::InvalidProfileName(n) => write!(
                f,
                "invalid profile name {n:?}: must be non-empty, without whitespace or control characters"
            ),
            Error::DuplicateKey(p) => write!(f, "profile {p:?}: key already added"),
            Error::PredefinedProfile(p) => {
                write!(
                    f,
                    "profile {p:?} is predefined: heaprof records it, add/remove are not allowed"
                )
            }
            Error::InvalidProfile(m) => write!(f, "invalid profile: {m}"),
            Error::Io(e) => write!(f, "writing profile: {e}"),
            Error::Os { op, source } => write!(f, "{op}: {source}"),
            Error::CpuProfileInUse => f.write_str("cpu profiling already in use"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) | Error::Os { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

/// A write error: [`Error::Io`].
impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl Error {
    /// [`Error::Os`]: `op` failed with `source`.
    pub(crate) fn os(op: impl Into<String>, source: io::Error) -> Error {
        Error::Os {
            op: op.into(),
            source,
        }
    }

    /// [`Error::Os`] from an `errno` value.
    pub(crate) fn errno(op: impl Into<String>, errno: i32) -> Error {
        Error::os(op, io::Error::from_raw_os_error(errno))
    }
}
