//! The public API that is not a profile kind of its own: Go's `Profile` registry and
//! handle ([`profile`]) and the rate setters ([`rates`]).

pub(crate) mod profile;
pub(crate) mod rates;
