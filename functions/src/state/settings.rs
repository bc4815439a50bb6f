//! How a writer of the state commits: shard counts for a new state, the dedup window, retries and compaction.

use super::compaction::Compaction;
use super::shards::ShardCounts;

/// The state's settings, apart from the configuration in `config/` (which [`crate::snapshot`] loads).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Shard counts for a new state.
    pub shards: ShardCounts,
    /// How long a messageId is remembered for dedup after it was first applied (default 7 days).
    pub dedup_window_ms: i64,
    /// Commit attempts before giving up on conflicts (each re-reads the state).
    pub max_attempts: u32,
    /// When a commit folds the state's deltas into whole shards.
    pub compaction: Compaction,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            shards: ShardCounts::default(),
            dedup_window_ms: 7 * 24 * 3600 * 1000,
            max_attempts: 8,
            compaction: Compaction::default(),
        }
    }
}
