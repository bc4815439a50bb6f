//! Identity and profile state on object storage: sharded, copy-on-write, committed by one compare-and-swap.
//!
//! - `state/manifest.json` is the only object ever replaced. It names the current object of every shard and
//!   carries a version. A commit writes each changed shard as a new immutable object
//!   (`state/v1/<kind>/<shard>/<version>-<content hash>.json.gz`, create-only), then replaces the manifest
//!   with `If-Match` on the ETag it started from. A second writer that started from the same manifest is
//!   fenced (412) and re-runs its batch on the new state, so no update is lost.
//! - Incremental: a batch reads and rewrites only the shards its identifiers, profiles and messageIds hash
//!   to; the rest of the state is untouched.
//! - Crash-safe: until the manifest moves, nothing written is visible; a retry recomputes the same result
//!   (profile ids are derived from the events, not drawn at random) and unreferenced shard objects are garbage.
//! - Idempotent: messageIds are remembered for a window (exactly, in dedup shards), so an object processed
//!   twice — or a notification delivered twice — changes nothing.

mod shards;
mod txn;

pub use shards::{MANIFEST_KEY, Manifest, ShardCounts, StoredProfile};
pub use txn::lookup;
pub use txn::{CommitStats, Transaction};
