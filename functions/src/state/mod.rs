//! Identity and profile state on object storage: sharded, immutable objects, committed by one compare-and-swap.
//!
//! - `state/manifest.json` is the only object ever replaced. It names the base object of every shard, the
//!   deltas committed since, and a version. A commit writes one delta object — the entries it changed —
//!   (`state/v1/deltas/<version>-<content hash>.json.gz`, create-only), then replaces the manifest with
//!   `If-Match` on the ETag it started from. A second writer that started from the same manifest is fenced
//!   (412) and re-runs its batch on the new state, so no update is lost.
//! - Incremental: a batch reads only the shards its identifiers, profiles and messageIds hash to, and writes
//!   only what it changed. When the deltas grow past the [`Compaction`] policy, a commit folds them into new
//!   whole base objects of the shards they touch.
//! - Crash-safe: until the manifest moves, nothing written is visible; a retry recomputes the same result
//!   (profile ids are derived from the events, not drawn at random) and unreferenced shard objects are garbage.
//! - Idempotent: messageIds are remembered for a window (exactly, in dedup shards), so an object processed
//!   twice — or a notification delivered twice — changes nothing.
//!
//! Files: `txn` (a transaction: begin, read and change entries; `txn/commit.rs`: a delta or a fold, then the
//! manifest), `entries` (how each shard kind's entries are decoded), `objects` (state objects' names and
//! I/O), `cache` (decoded objects kept in this process), [`Compaction`], [`Settings`], [`Attempts`]
//! (retrying against other writers), `read` ([`lookup`], [`scan`]), `gc` ([`collect_garbage`]), `shards`
//! (the stored shapes).

mod cache;
mod compaction;
mod entries;
mod gc;
mod objects;
mod read;
mod retry;
mod settings;
mod shards;
mod txn;

pub use compaction::Compaction;
pub use gc::collect_garbage;
pub use read::{Scan, lookup, scan};
pub use retry::{Attempts, fenced, kept_changing};
pub use settings::Settings;
pub use shards::{BaseRef, DeltaRef, MANIFEST_KEY, Manifest, ShardCounts, ShardRef, StoredProfile};
pub(crate) use shards::{IdsShard, ProfilesShard, shard_of};
pub use txn::{CommitStats, Transaction};
