//! The functions' one error type.

use crate::storage::StoreError;

/// What went wrong in a handler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object store failed (an outside service's fault; retryable).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored state does not decode or is inconsistent (an outside writer's or our bug; not retryable).
    #[error("corrupt state: {0}")]
    Corrupt(String),
    /// Configuration in the store is invalid (the operator's fault; not retryable until fixed).
    #[error(transparent)]
    Config(#[from] shared::Error),
}
