//! When a commit folds the outstanding deltas into whole shards instead of adding one more delta.

/// When a commit folds the outstanding deltas into whole shards instead of adding one more delta.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compaction {
    /// Deltas outstanding at most (every transaction reads them all).
    pub max_deltas: usize,
    /// Fold once the outstanding deltas' bytes exceed this share of the base objects' bytes …
    pub max_delta_ratio: f64,
    /// … and this many bytes: a small state keeps committing deltas instead of rewriting every shard it has
    /// at each commit.
    pub min_fold_bytes: u64,
}

impl Default for Compaction {
    /// Up to 32 deltas or a quarter of the base (once the deltas hold 4 MiB): a byte of change is rewritten
    /// about four more times by compaction, and a reader applies a bounded number of deltas.
    fn default() -> Self {
        Self { max_deltas: 32, max_delta_ratio: 0.25, min_fold_bytes: 4 << 20 }
    }
}

impl Compaction {
    /// Folds at every commit: each commit rewrites the shards it changed, whole (no deltas).
    pub fn always() -> Self {
        Self { max_deltas: 0, max_delta_ratio: 0.0, min_fold_bytes: 0 }
    }
}
