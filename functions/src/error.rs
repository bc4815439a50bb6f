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
    /// This machine failed: its temporary files, a task or thread that stopped, no randomness, no clock (the
    /// environment's fault; retryable elsewhere or later).
    #[error("this machine failed: {0}")]
    Machine(String),
    /// An invocation that cannot be carried out as given (its sender's fault; not retryable).
    #[error("invalid invocation: {0}")]
    Invalid(String),
    /// A bug: a value that must encode did not, or an invariant of ours broke (not retryable).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A value of ours that did not encode.
    pub fn encoding(error: serde_json::Error) -> Self {
        Error::Internal(format!("encoding: {error}"))
    }
}
