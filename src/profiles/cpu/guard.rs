//! [`CpuProfile`]: a CPU profile owned by a value, which stops it when dropped and gives the
//! writer back from [`CpuProfile::stop`] (as flate2's `finish` does).
//!
//! Called by: users. The writer travels to the drain thread as a `Box<dyn Sink>` and comes
//! back through `super::finish`, downcast to the type it was started with.

use std::fmt;
use std::io::{self, Write};
use std::marker::PhantomData;

use super::{finish, start_session};
use crate::base::error::Error;

/// A running CPU profile owned by this value: [`stop`](CpuProfile::stop) writes it and
/// returns the writer it was started with; dropping it stops and writes it too (a write error
/// is then dropped, as `BufWriter`'s drop does).
///
/// ```
/// # fn work() {}
/// let prof = heaprof::CpuProfile::start(Vec::new())?;
/// work();
/// let bytes: Vec<u8> = prof.stop()?; // the gzipped profile
/// let profile = heaprof::read_profile(&bytes)?;
/// assert_eq!(profile.sample_types[1].name, "cpu");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// One profile runs at a time, as with [`start_cpu_profile`](crate::start_cpu_profile).
/// [`stop_cpu_profile`](crate::stop_cpu_profile) stops this one too; its writer and result
/// then wait for this value's [`stop`](CpuProfile::stop).
#[must_use = "the profile stops when this value is dropped"]
pub struct CpuProfile<W = Box<dyn Write + Send>> {
    /// The profile's generation; `None` once stopped.
    generation: Option<u32>,
    /// The writer is held by the drain thread, not here: `fn() -> W` keeps this value `Send`
    /// and `Sync` whatever `W` is.
    writer: PhantomData<fn() -> W>,
}

impl<W: Write + Send + 'static> CpuProfile<W> {
    /// Starts a CPU profile of every thread writing to `w` when stopped; errors as
    /// [`start_cpu_profile`](crate::start_cpu_profile).
    pub fn start(w: W) -> Result<CpuProfile<W>, Error> {
        Ok(CpuProfile {
            generation: Some(start_session(Box::new(w), true)?),
            writer: PhantomData,
        })
    }

    /// Stops the profile, writes it completely and returns the writer (flushed). Returns
    /// the error that stopped the writing instead (the writer is then dropped), and an error
    /// in a forked child if the profile was running at the fork (it stayed with the parent).
    ///
    /// ```
    /// let prof = heaprof::CpuProfile::start(Vec::new())?;
    /// heaprof::stop_cpu_profile(); // someone else stops it: its bytes wait here
    /// assert!(!prof.stop()?.is_empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stop(mut self) -> io::Result<W> {
        let generation = self.generation.take();
        let outcome = generation.and_then(finish).unwrap_or_else(|| {
            Err(io::Error::other(
                "the CPU profile was running when the process forked: it stayed with the parent",
            ))
        });
        let writer = outcome?.into_any().downcast::<W>();
        // A generation's outcome holds the writer its `start` boxed, of type `W`.
        Ok(*writer.expect("heaprof: a CPU profile's writer has the type it was started with"))
    }
}

impl<W> fmt::Debug for CpuProfile<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuProfile")
            .field("generation", &self.generation)
            .field("writer", &std::any::type_name::<W>())
            .finish()
    }
}

impl<W> Drop for CpuProfile<W> {
    fn drop(&mut self) {
        if let Some(g) = self.generation.take() {
            drop(finish(g));
        }
    }
}
