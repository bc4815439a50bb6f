//! The import function: a file put under `imports/<source id>/` (an S3 notification through SQS) is imported
//! as `cdp import` imports it, through the mapping at `imports/<source id>/mapping.json`: downloaded to the
//! function's temporary storage, read in chunks through the mapping and the collect pipeline into `raw/`
//! (which ingest takes up from there), bad rows to `failed/imports/`. A file that needs longer than one run
//! stops before the deadline with its checkpoint written (`ingest/imports/…`), and its message is handed back
//! to SQS, so the next run resumes after the chunks already stored.
//!
//! A file that cannot be imported as it stands (no such source, no mapping, a mapping that does not fit the
//! file, a file that does not read) is not retried: the reason is written beside its failed rows,
//! `failed/imports/<source>/<file>.problem.json`, and logged.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Value, json};
use shared::import::Mapping;
use shared::storage::keys;
use shared::time::UtcTime;

use super::{Import, Imported, file_sha256, import_file};
use crate::Error;
use crate::notifications::{BatchItemFailure, SqsBatchResponse, keys_of_s3_event_under, keys_of_sqs_event_under};
use crate::storage::{ObjectStore, PutOptions};

/// The mapping's name in a source's folder.
pub const MAPPING: &str = "mapping.json";

/// Bytes per ranged read when a file is downloaded.
const DOWNLOAD_PART: u64 = 16 << 20;

/// What one invocation may use.
#[derive(Debug, Clone)]
pub struct Run {
    /// When to stop taking chunks (the deadline less a margin to write the checkpoint).
    pub stop_at: Instant,
    /// Where files are downloaded (the function's `/tmp`).
    pub tmp: PathBuf,
    /// 32 bytes from the OS's CSPRNG.
    pub seed: [u8; 32],
}

/// What became of one file.
#[derive(Debug)]
pub enum Outcome {
    /// Imported to its end (by this run and earlier ones).
    Done(Imported),
    /// Stopped at the deadline; the next delivery resumes it.
    Unfinished(Imported),
    /// Not a file to import (the mapping, a folder marker, an object gone, a file already imported).
    Skipped(&'static str),
    /// Cannot be imported as it stands; retrying would not help.
    Refused(String),
}

/// Handles one invocation: an SQS batch of S3 notifications (messages whose file is unfinished or whose
/// import failed for a reason that may pass are reported in `batchItemFailures`), or a direct S3 event.
pub async fn handle_payload<S: ObjectStore>(
    store: &S,
    payload: &Value,
    now: UtcTime,
    run: &Run,
) -> Result<Value, Error> {
    let is_sqs = payload["Records"].as_array().and_then(|r| r.first()).and_then(|r| r["eventSource"].as_str())
        == Some("aws:sqs");
    if !is_sqs {
        let keys = keys_of_s3_event_under(payload, keys::IMPORTS)
            .map_err(|e| Error::Invalid(format!("unexpected payload: {e}")))?;
        let mut outcomes = Vec::new();
        for key in keys {
            let outcome = import_object(store, &key, now, run).await?;
            if let Outcome::Unfinished(_) = outcome {
                return Err(Error::Machine(format!("{key}: stopped at the deadline; the retry resumes it")));
            }
            outcomes.push(summary(&key, &outcome));
        }
        return Ok(json!({ "files": outcomes }));
    }
    let messages = keys_of_sqs_event_under(payload, keys::IMPORTS)
        .map_err(|e| Error::Invalid(format!("unexpected payload: {e}")))?;
    let mut response = SqsBatchResponse::default();
    for (message_id, parsed) in messages {
        let retry = match parsed {
            Err(reason) => {
                tracing::warn!(%message_id, %reason, "message is not an S3 notification");
                true
            }
            Ok(keys) => {
                let mut retry = false;
                for key in keys {
                    match import_object(store, &key, now, run).await {
                        Ok(outcome) => {
                            tracing::info!(summary = %summary(&key, &outcome), "import");
                            retry |= matches!(outcome, Outcome::Unfinished(_));
                        }
                        Err(error) => {
                            tracing::error!(%key, %error, "import failed; SQS will redeliver");
                            retry = true;
                        }
                    }
                }
                retry
            }
        };
        if retry {
            response.batch_item_failures.push(BatchItemFailure { item_identifier: message_id });
        }
    }
    serde_json::to_value(&response).map_err(Error::encoding)
}

fn summary(key: &str, outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Done(imported) => json!({"key": key, "outcome": "done", "rows": imported.rows,
            "accepted": imported.accepted, "failed": imported.failed, "resumedChunks": imported.resumed_chunks}),
        Outcome::Unfinished(imported) => json!({"key": key, "outcome": "unfinished", "rows": imported.rows,
            "accepted": imported.accepted, "failed": imported.failed}),
        Outcome::Skipped(why) => json!({"key": key, "outcome": "skipped", "why": why}),
        Outcome::Refused(reason) => json!({"key": key, "outcome": "refused", "reason": reason}),
    }
}

/// Imports the file at `key` (`imports/<source>/<file>`).
pub async fn import_object<S: ObjectStore>(store: &S, key: &str, now: UtcTime, run: &Run) -> Result<Outcome, Error> {
    let rest = key.strip_prefix(keys::IMPORTS).unwrap_or(key);
    let Some((source_id, name)) = rest.split_once('/') else { return Ok(Outcome::Skipped("not in a source's folder")) };
    if name.is_empty() || name.ends_with('/') {
        return Ok(Outcome::Skipped("a folder"));
    }
    if name == MAPPING {
        return Ok(Outcome::Skipped("the source's mapping"));
    }
    let problem_key = format!("failed/imports/{source_id}/{}.problem.json", name.replace('/', "~"));
    let refuse = |reason: String| async {
        tracing::error!(%key, %reason, "file not imported");
        let body = json!({"object": key, "reason": reason, "at": now.to_string()});
        store.put(&problem_key, body.to_string().into_bytes(), PutOptions::json()).await?;
        Ok::<_, Error>(Outcome::Refused(reason))
    };
    let sources = crate::collect::load_sources(store).await?;
    let Some(source) = sources.list().iter().find(|s| s.id == source_id).cloned() else {
        return refuse(format!("no source {source_id:?}: create it first (`cdp source add`, POST /v1/sources)")).await;
    };
    if !source.enabled {
        return refuse(format!("source {source_id:?} is disabled")).await;
    }
    let mapping_key = format!("{}{source_id}/{MAPPING}", keys::IMPORTS);
    let Some(mapping) = store.get(&mapping_key).await? else {
        return refuse(format!("no mapping at {mapping_key}: put it there, then the file again")).await;
    };
    let mapping = match Mapping::parse(&mapping.body) {
        Ok(mapping) => mapping,
        Err(problem) => return refuse(format!("{mapping_key}: {problem}")).await,
    };
    let file_name = Path::new(name).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let local = run.tmp.join(format!("cdp-import-{}", file_name));
    let downloaded = download(store, key, &local).await;
    let result = match downloaded {
        Ok(false) => Ok(Outcome::Skipped("the object is gone")),
        Ok(true) => import_downloaded(store, &local, &source, mapping, now, run).await,
        Err(error) => Err(error),
    };
    let _ = std::fs::remove_file(&local);
    match result {
        // The file or the mapping is the problem: the operator's to mend, not a retry's.
        Err(Error::Invalid(reason)) => refuse(reason).await,
        other => other,
    }
}

async fn import_downloaded<S: ObjectStore>(
    store: &S,
    local: &Path,
    source: &shared::source::SourceConfig,
    mapping: Mapping,
    now: UtcTime,
    run: &Run,
) -> Result<Outcome, Error> {
    let sha256 = file_sha256(local).map_err(|e| Error::Invalid(e.0))?;
    let checkpoint = keys::import_checkpoint(&source.id, &sha256, &mapping.sha256());
    if let Some(object) = store.get(&checkpoint).await?
        && serde_json::from_slice::<super::Checkpoint>(&object.body).is_ok_and(|c| c.complete)
    {
        return Ok(Outcome::Skipped("already imported (the same file with the same mapping)"));
    }
    let suppression = crate::suppression::load_suppression_check(store).await?;
    let import = Import {
        source,
        suppression: suppression.as_ref(),
        now,
        seed: run.seed,
        checkpoint: Some(&checkpoint),
        stop_at: Some(run.stop_at),
    };
    let imported = import_file(store, local, mapping, &import, &mut |_, _| {}).await?;
    Ok(if imported.complete { Outcome::Done(imported) } else { Outcome::Unfinished(imported) })
}

/// Downloads `key` to `to` in ranged reads of its listed size (a range past the end is an error in S3);
/// `false` when there is no such object.
async fn download<S: ObjectStore>(store: &S, key: &str, to: &Path) -> Result<bool, Error> {
    use std::io::Write as _;
    let listed = store.list(key).await?;
    let Some(meta) = listed.iter().find(|m| m.key == key) else { return Ok(false) };
    let mut file = std::fs::File::create(to).map_err(|e| Error::Machine(format!("{}: {e}", to.display())))?;
    let mut start = 0;
    while start < meta.size {
        let Some(part) = store.get_range(key, start, DOWNLOAD_PART.min(meta.size - start)).await? else {
            return Ok(false);
        };
        if part.is_empty() {
            return Err(Error::Corrupt(format!("{key}: shorter than its listed {} bytes", meta.size)));
        }
        file.write_all(&part).map_err(|e| Error::Machine(format!("{}: {e}", to.display())))?;
        start += part.len() as u64;
    }
    file.sync_all().map_err(|e| Error::Machine(format!("{}: {e}", to.display())))?;
    Ok(true)
}
