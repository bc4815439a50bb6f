//! What happens after an attempt: delivered, retried later (on the Standard Webhooks schedule, or when the
//! partner's `Retry-After` says), dead-lettered at once, or the destination disabled.

use serde::{Deserialize, Serialize};

/// The spec's schedule, in seconds after the previous attempt: immediately, 5 s, 5 min, 30 min, 2 h, 5 h,
/// 10 h, 14 h, 20 h, 24 h.
pub const STANDARD_SCHEDULE: [u64; 10] = [0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400];
/// The longest wait a `Retry-After` may ask for; longer asks are capped.
pub const RETRY_AFTER_MAX_SECONDS: u64 = 86400;

/// The outcome of one attempt, as the sender saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Outcome {
    /// The partner answered with this status (and `Retry-After` in seconds, if it sent one).
    Status {
        /// HTTP status.
        status: u16,
        /// `Retry-After`, seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    /// No answer within the attempt's timeout.
    Timeout,
    /// No connection (refused, reset, TLS, DNS failure).
    Connect {
        /// What failed (no secrets: host and error only).
        error: String,
    },
    /// The address is not allowed (private, loopback, metadata...), or a redirect led there.
    Refused {
        /// Why.
        reason: String,
    },
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Done.
    Delivered,
    /// Try again this many milliseconds from now.
    RetryIn(u64),
    /// Give up: keep the message as a dead letter with this reason.
    DeadLetter(String),
    /// The partner said the endpoint is gone (410): disable the destination; the message is dead-lettered.
    Disable,
}

/// A retry schedule: `schedule[n]` seconds wait before attempt `n + 1` (the first entry is the first
/// attempt's delay, normally 0). After the last attempt fails the message is dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RetryPolicy {
    /// Seconds.
    pub schedule: Vec<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { schedule: STANDARD_SCHEDULE.to_vec() }
    }
}

impl RetryPolicy {
    /// The verdict after attempt number `attempt` (1 for the first) ended with `outcome`.
    pub fn verdict(&self, attempt: u32, outcome: &Outcome) -> Verdict {
        let retry = |retry_after: Option<u64>, what: String| match self.schedule.get(attempt as usize) {
            Some(&wait) => {
                let wait = retry_after.map_or(wait, |asked| asked.min(RETRY_AFTER_MAX_SECONDS));
                Verdict::RetryIn(wait * 1000)
            }
            None => Verdict::DeadLetter(format!("{what}; gave up after {attempt} attempts")),
        };
        match outcome {
            Outcome::Status { status: 200..=299, .. } => Verdict::Delivered,
            Outcome::Status { status: 410, .. } => Verdict::Disable,
            Outcome::Status { status: status @ (408 | 429 | 500..=599), retry_after } => {
                retry(*retry_after, format!("HTTP {status}"))
            }
            Outcome::Status { status: status @ 300..=399, .. } => Verdict::DeadLetter(format!(
                "HTTP {status}: redirect not followed (redirects are off for this destination)"
            )),
            Outcome::Status { status, .. } => {
                Verdict::DeadLetter(format!("HTTP {status}: the partner refused the message"))
            }
            Outcome::Timeout => retry(None, "timed out".into()),
            Outcome::Connect { error } => retry(None, format!("no connection: {error}")),
            Outcome::Refused { reason } => Verdict::DeadLetter(format!("refused: {reason}")),
        }
    }
}
