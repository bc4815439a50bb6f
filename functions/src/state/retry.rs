//! Committing against other writers: a writer that was fenced (another committed first) runs its work again on
//! the new state, a bounded number of times.

use super::Settings;
use crate::Error;
use crate::storage::StoreError;

/// The attempts of one piece of work at committing:
///
/// ```ignore
/// let mut attempts = Attempts::new(&settings, "this batch");
/// loop {
///     let attempt = attempts.next().await?;
///     // begin a transaction, do the work, then:
///     if let Some(done) = fenced(txn.commit().await)? { return Ok(done) }
/// }
/// ```
#[derive(Debug)]
pub struct Attempts<'a> {
    what: &'a str,
    max: u32,
    made: u32,
}

impl<'a> Attempts<'a> {
    /// At most `settings.max_attempts` attempts of `what` (named in logs and in the error).
    pub fn new(settings: &Settings, what: &'a str) -> Self {
        Self { what, max: settings.max_attempts.max(1), made: 0 }
    }

    /// The next attempt's number (from 1): the first at once; after one that was fenced, after a short pause;
    /// once every attempt was fenced, the error that the state kept changing.
    pub async fn next(&mut self) -> Result<u32, Error> {
        if self.made >= self.max {
            return Err(kept_changing(self.what, self.max));
        }
        if self.made > 0 {
            tracing::info!(attempt = self.made, what = %self.what, "another writer committed first; running again");
            tokio::time::sleep(std::time::Duration::from_millis(10 * u64::from(self.made))).await;
        }
        self.made += 1;
        Ok(self.made)
    }
}

/// The state changed under `what` on each of `attempts` attempts: a busy state, not a fault; try again later.
pub fn kept_changing(what: &str, attempts: u32) -> Error {
    Error::Store(StoreError::Unavailable(format!("the state kept changing under {what} for {attempts} attempts")))
}

/// `Ok(None)` for a commit fenced by another writer (run again), the result otherwise.
pub fn fenced<T>(result: Result<T, Error>) -> Result<Option<T>, Error> {
    match result {
        Ok(done) => Ok(Some(done)),
        Err(Error::Store(StoreError::PreconditionFailed)) => Ok(None),
        Err(error) => Err(error),
    }
}
