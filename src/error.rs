//! The crate's error type.

use std::fmt;

/// What went wrong in a heaprof call.
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
    /// Writing a profile failed.
    Io(std::io::Error),
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
            Error::CpuProfileInUse => f.write_str("cpu profiling already in use"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
