//! The core's one error type.

/// What went wrong in a core operation that is not a per-event decision (those are
/// [`crate::event::FailureCode`]s, kept with the event).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad configuration: a source file that does not parse or breaks a rule (the operator's fault).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A stored object does not decode (corrupt or foreign data in the bucket; an outside writer's fault).
    #[error("cannot decode stored object: {0}")]
    Decode(String),
}

/// What is wrong with something given — a definition, a URL, an identifier, a setting — in words for whoever
/// gave it: their fault, and not worth retrying until they change it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<String> for Invalid {
    fn from(problem: String) -> Self {
        Self(problem)
    }
}

impl From<&str> for Invalid {
    fn from(problem: &str) -> Self {
        Self(problem.to_string())
    }
}

impl std::ops::Deref for Invalid {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}
