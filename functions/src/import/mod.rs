//! File imports (CSV, NDJSON, Parquet, each also gzipped) into `raw/`, through the same collect pipeline as an
//! HTTP event. The mapping is checked against the file's columns before any row is read; each row's
//! `messageId` comes from the file's SHA-256 and the row's number, so importing the same file again changes
//! nothing; rows that cannot be read or do not pass the pipeline go to `failed/imports/` with the file, the
//! row's number and the reason, and the rest go on; suppressed people's rows are dropped and counted, as at the
//! collector. Used by `cdp import`.

pub mod lambda;
pub mod read;

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use shared::Invalid;
use shared::access::SuppressionCheck;
use shared::collect::collect_events;
use shared::ids::Entropy;
use shared::import::{Compiled, Mapping, message_id};
use shared::source::SourceConfig;
use shared::time::UtcTime;

pub use read::{Format, Rows};

use crate::Error;
use crate::storage::{ObjectStore, PutOptions};

/// Rows per raw object.
pub const CHUNK: usize = 5000;

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Imported {
    /// Rows read.
    pub rows: u64,
    /// Rows stored as events.
    pub accepted: u64,
    /// Rows that failed (`failed/imports/…`).
    pub failed: u64,
    /// Rows of suppressed people, dropped.
    pub suppressed: u64,
    /// The raw objects written.
    pub objects: Vec<String>,
    /// Where the failed rows are (one object per chunk with failures), under this prefix.
    pub failed_prefix: String,
    /// The file's SHA-256.
    pub sha256: String,
    /// Whether every row was read; `false` when the run stopped at its deadline (it resumes from its
    /// checkpoint).
    pub complete: bool,
    /// Chunks stored by earlier runs and passed over by this one (their rows are not counted again).
    pub resumed_chunks: u64,
}

/// A row that did not become an event.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedRow {
    /// The file's name.
    pub file: String,
    /// The row's number (the line in a CSV or NDJSON file, the row in a Parquet file; from 1).
    pub row: u64,
    /// Why.
    pub reason: String,
    /// The event the row became, when it got that far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

/// SHA-256 of a file, streamed (lower-case hex).
pub fn file_sha256(path: &Path) -> Result<String, Invalid> {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path).map_err(|e| Invalid(format!("{}: {e}", path.display())))?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut file, &mut buffer).map_err(|e| Invalid(format!("{}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Whose the rows are and when they are imported.
#[derive(Debug, Clone, Copy)]
pub struct Import<'a> {
    /// The source the rows are events of.
    pub source: &'a SourceConfig,
    /// People whose rows are dropped (and counted), as at the collector.
    pub suppression: Option<&'a SuppressionCheck>,
    /// When: each event's receipt, and its timestamp where the mapping gives none.
    pub now: UtcTime,
    /// 32 bytes from the OS's CSPRNG (names the raw objects).
    pub seed: [u8; 32],
    /// Where the import keeps which chunks it stored (read at the start, written every few seconds and at the
    /// end), so a run that stops resumes; none: no checkpoint.
    pub checkpoint: Option<&'a str>,
    /// When to stop taking chunks (the checkpoint is written, and the result says it is not complete).
    pub stop_at: Option<std::time::Instant>,
}

impl<'a> Import<'a> {
    /// An import of one run to its end, without a checkpoint (what `cdp import` and `cdp sync` do).
    pub fn whole(
        source: &'a SourceConfig,
        suppression: Option<&'a SuppressionCheck>,
        now: UtcTime,
        seed: [u8; 32],
    ) -> Self {
        Self { source, suppression, now, seed, checkpoint: None, stop_at: None }
    }
}

/// What an import's checkpoint holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The chunks stored (by number: the file's rows in order, [`CHUNK`] each).
    pub chunks: std::collections::BTreeSet<u64>,
    /// Whether the file was read to its end.
    pub complete: bool,
    /// Rows and events so far, over all runs.
    pub rows: u64,
    /// Events stored so far.
    pub accepted: u64,
    /// Rows failed so far.
    pub failed: u64,
}

/// How often a running import writes its checkpoint.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

async fn write_checkpoint<S: ObjectStore>(store: &S, key: &str, checkpoint: &Checkpoint) -> Result<(), Error> {
    let body = serde_json::to_vec(checkpoint).map_err(Error::encoding)?;
    store.put(key, body, PutOptions::json()).await?;
    Ok(())
}

/// Imports the rows of `path` as events of `run.source`: reads it in chunks of [`CHUNK`] rows, each through the
/// mapping and the collect pipeline into one raw object. `progress` hears the rows and the file's bytes read
/// so far after each chunk. An error before the first row (the file, the mapping) stores nothing; an error
/// after (storage, a file that stops being readable) leaves what was stored, which the error says.
pub async fn import_file<S: ObjectStore>(
    store: &S,
    path: &Path,
    mapping: Mapping,
    run: &Import<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Imported, Error> {
    let (format, gz) = Format::of(path).map_err(invalid)?;
    let mut rows = Rows::open(path, format, gz).map_err(invalid)?;
    let mapping_sha256 = mapping.sha256();
    let mapping = mapping.check(rows.columns()).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    // Columns the mapping does not read are not decoded (nor can their types fail a row).
    rows.only(mapping.columns());
    let sha256 = file_sha256(path).map_err(invalid)?;
    let Import { source, suppression, now, seed, checkpoint, stop_at } = *run;
    let mut progress_kept = match checkpoint {
        Some(key) => match store.get(key).await? {
            Some(object) => {
                serde_json::from_slice::<Checkpoint>(&object.body).map_err(|e| Error::Corrupt(format!("{key}: {e}")))?
            }
            None => Checkpoint::default(),
        },
        None => Checkpoint::default(),
    };
    let mut out = Imported {
        failed_prefix: format!("failed/imports/{}/{}-{}/", source.id, &sha256[..16], &mapping_sha256[..8]),
        sha256: sha256.clone(),
        ..Imported::default()
    };
    // A reader thread parses chunks; workers (one per core) map them and run the pipeline; this task stores
    // what they made. Dropping the receiving end (an error here) stops them all.
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).clamp(1, 8);
    let (work, queue) = std::sync::mpsc::sync_channel::<(u64, Vec<read::Row>, u64)>(workers * 2);
    let queue = Arc::new(Mutex::new(queue));
    let (finished, mut results) = tokio::sync::mpsc::channel::<Made>(workers * 2);
    let reader_results = finished.clone();
    std::thread::spawn(move || {
        for number in 0.. {
            match rows.next_chunk(CHUNK) {
                Ok(chunk) if chunk.is_empty() => {
                    let _ = reader_results.blocking_send(Made::End(number));
                    break;
                }
                Ok(chunk) => {
                    if work.send((number, chunk, rows.bytes_read())).is_err() {
                        break;
                    }
                }
                Err(problem) => {
                    let _ = reader_results.blocking_send(Made::Problem(problem));
                    break;
                }
            }
        }
    });
    let context = Arc::new(Context {
        mapping,
        source: source.clone(),
        suppression: suppression.cloned(),
        ids: Ids::File { sha256, mapping_sha256 },
        file: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        failed_prefix: out.failed_prefix.clone(),
        now,
        seed,
    });
    for _ in 0..workers {
        let (queue, finished, context) = (queue.clone(), finished.clone(), context.clone());
        std::thread::spawn(move || {
            loop {
                let next = match queue.lock() {
                    Ok(queue) => queue.recv(),
                    Err(_) => break,
                };
                let Ok((number, chunk, read)) = next else { break };
                // A chunk that fails to be made is reported, never silently missing from the import.
                let made =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| context.chunk(number, chunk, read)));
                let made = made.map_or(Made::Lost(number), Made::Chunk);
                if finished.blocking_send(made).is_err() {
                    break;
                }
            }
        });
    }
    drop(finished);
    let mut read = 0;
    let mut written = std::time::Instant::now();
    let mut stopped = false;
    let (mut received, mut expected) = (0u64, None);
    while let Some(made) = results.recv().await {
        let chunk = match made {
            Made::Chunk(chunk) => chunk,
            Made::End(chunks) => {
                expected = Some(chunks);
                continue;
            }
            Made::Lost(number) => {
                return Err(Error::Machine(format!(
                    "{}: chunk {number} (rows {} to {}) could not be made; import the file again (what is stored \
                     is not doubled)",
                    path.display(),
                    number * CHUNK as u64 + 1,
                    (number + 1) * CHUNK as u64
                )));
            }
            Made::Problem(problem) => {
                return Err(Error::Invalid(format!(
                    "{}: {problem} (stopped after {} rows: {} stored as events in {} raw objects)",
                    path.display(),
                    out.rows,
                    out.accepted,
                    out.objects.len()
                )));
            }
        };
        received += 1;
        read = read.max(chunk.read);
        if progress_kept.chunks.contains(&chunk.number) {
            out.resumed_chunks += 1;
        } else {
            let before = (out.rows, out.accepted, out.failed);
            let number = chunk.number;
            chunk.store(store, &mut out).await?;
            progress_kept.chunks.insert(number);
            progress_kept.rows += out.rows - before.0;
            progress_kept.accepted += out.accepted - before.1;
            progress_kept.failed += out.failed - before.2;
        }
        progress(out.rows, read);
        if let Some(key) = checkpoint
            && written.elapsed() >= CHECKPOINT_EVERY
        {
            write_checkpoint(store, key, &progress_kept).await?;
            written = std::time::Instant::now();
        }
        if stop_at.is_some_and(|at| std::time::Instant::now() >= at) {
            // Dropping the receiver stops the reader and the workers.
            stopped = true;
            break;
        }
    }
    drop(results);
    if !stopped && expected != Some(received) {
        return Err(Error::Machine(format!(
            "{}: the reader or a worker stopped early ({received} chunks made of {}); import the file again (what \
             is stored is not doubled)",
            path.display(),
            expected.map_or("an unknown number".to_string(), |n| n.to_string())
        )));
    }
    out.complete = !stopped;
    if let Some(key) = checkpoint {
        progress_kept.complete = out.complete;
        write_checkpoint(store, key, &progress_kept).await?;
    }
    if stopped {
        out.objects.sort();
        return Ok(out);
    }
    if out.rows == 0 && out.resumed_chunks == 0 {
        return Err(Error::Invalid(format!("{}: the file has no rows (only its columns)", path.display())));
    }
    out.objects.sort();
    Ok(out)
}

/// Where rows read elsewhere than a file come from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// What failed rows' records name as their file (`db.internal:5432/crm (customers)`).
    pub name: &'a str,
    /// What each row's `messageId` starts with.
    pub id_prefix: &'a str,
}

/// Rows read elsewhere (a database table's, by `cdp sync`), stored as events of `run.source` as a file's
/// chunk is: through the mapping and the collect pipeline into one raw object, failed rows under
/// `out.failed_prefix` named by `origin`. Each row's `messageId` is the origin's prefix and a hash of its
/// cells, so the same row read again changes nothing and a changed row is a new event. `number` names the chunk
/// (its objects' randomness). Adds what it stored to `out`.
pub async fn store_rows<S: ObjectStore>(
    store: &S,
    mapping: &Compiled,
    run: &Import<'_>,
    origin: Origin<'_>,
    number: u64,
    rows: Vec<read::Row>,
    out: &mut Imported,
) -> Result<(), Error> {
    let context = Context {
        mapping: mapping.clone(),
        source: run.source.clone(),
        suppression: run.suppression.cloned(),
        ids: Ids::Content { prefix: origin.id_prefix.to_string() },
        file: origin.name.to_string(),
        failed_prefix: out.failed_prefix.clone(),
        now: run.now,
        seed: run.seed,
    };
    context.chunk(number, rows, 0).store(store, out).await
}

/// How rows get their `messageId`s.
enum Ids {
    /// From the file's and the mapping's hashes and the row's number.
    File { sha256: String, mapping_sha256: String },
    /// From a prefix and a hash of the row's cells.
    Content { prefix: String },
}

impl Ids {
    fn of(&self, row: u64, cells: &[Option<serde_json::Value>]) -> String {
        match self {
            Ids::File { sha256, mapping_sha256 } => message_id(sha256, mapping_sha256, row),
            Ids::Content { prefix } => {
                let text = serde_json::to_string(cells).unwrap_or_default();
                format!("{prefix}-{}", &shared::ids::sha256_hex(&text)[..24])
            }
        }
    }
}

/// What the reader and the workers hand the storing task.
enum Made {
    /// A chunk made into objects.
    Chunk(Chunk),
    /// The file does not read past here.
    Problem(Invalid),
    /// The reader reached the end after this many chunks.
    End(u64),
    /// A worker failed to make this chunk.
    Lost(u64),
}

/// What a worker needs to turn chunks into objects.
struct Context {
    mapping: Compiled,
    source: SourceConfig,
    suppression: Option<SuppressionCheck>,
    ids: Ids,
    file: String,
    failed_prefix: String,
    now: UtcTime,
    seed: [u8; 32],
}

/// One chunk, made into objects to store: the suppressed count's record, the raw object, the failed rows.
struct Chunk {
    number: u64,
    rows: u64,
    read: u64,
    suppressed: u64,
    dropped: Option<(String, Vec<u8>)>,
    raw: Option<(String, Vec<u8>, u64)>,
    failed: Option<(String, Vec<u8>, u64)>,
}

impl Context {
    /// Chunk `number`'s rows through the mapping and the collect pipeline.
    fn chunk(&self, number: u64, rows: Vec<read::Row>, read: u64) -> Chunk {
        // Tests make a worker fail on the second chunk of a source named so.
        #[cfg(test)]
        assert!(!(self.source.id == "worker-fails" && number == 1), "a worker failed on chunk 1");
        let mut seed = self.seed;
        for (byte, n) in seed[24..].iter_mut().zip(number.to_le_bytes()) {
            *byte ^= n;
        }
        let mut entropy = Entropy::from_seed(seed);
        let (now, first) = (self.now, rows.first().map_or(0, |(row, _)| *row));
        // Raw objects are named by when they are stored, not when the import began: lake compaction and
        // reconciliation take objects in name order and never look behind their watermark.
        let received = crate::config::now().unwrap_or(now).max(now);
        let mut out =
            Chunk { number, rows: rows.len() as u64, read, suppressed: 0, dropped: None, raw: None, failed: None };
        let mut failed: Vec<FailedRow> = Vec::new();
        let mut texts = Vec::with_capacity(rows.len());
        let mut numbers = Vec::with_capacity(rows.len());
        for (row, cells) in rows {
            let made = cells.and_then(|cells| {
                let id = self.ids.of(row, &cells);
                self.mapping.event(&cells, &id, now).map_err(|reason| reason.0)
            });
            match made {
                Ok(text) => {
                    texts.push(text);
                    numbers.push(row);
                }
                Err(reason) => failed.push(FailedRow { file: self.file.clone(), row, reason, event: None }),
            }
        }
        let mut batch = collect_events(&self.source, &texts, received, &mut entropy);
        for rejected in std::mem::take(&mut batch.failed) {
            failed.push(FailedRow {
                file: self.file.clone(),
                row: numbers.get(rejected.index).copied().unwrap_or_default(),
                reason: rejected.reason,
                event: Some(rejected.original),
            });
        }
        let dropped = self.suppression.as_ref().map_or(0, |list| batch.drop_suppressed(list));
        if dropped > 0 {
            out.suppressed = dropped as u64;
            out.dropped = Some(shared::access::dropped_record(dropped, received, entropy.ulid(received)));
        }
        out.raw = batch.accepted_object().map(|(key, body)| (key, body, batch.accepted.len() as u64));
        if !failed.is_empty() {
            failed.sort_by_key(|f| f.row);
            // Named by the chunk's first row: importing the file again rewrites the same objects.
            let key = format!("{}{first:012}.ndjson.gz", self.failed_prefix);
            out.failed = Some((key, shared::storage::encode_ndjson_gz(&failed), failed.len() as u64));
        }
        out
    }
}

impl Chunk {
    /// Stores the chunk's objects and counts them into `out`.
    async fn store<S: ObjectStore>(self, store: &S, out: &mut Imported) -> Result<(), Error> {
        out.rows += self.rows;
        if let Some((key, body)) = self.dropped {
            store.put(&key, body, PutOptions::json()).await?;
            out.suppressed += self.suppressed;
        }
        if let Some((key, body, accepted)) = self.raw {
            store.put(&key, body, PutOptions::ndjson_gz()).await?;
            out.accepted += accepted;
            out.objects.push(key);
        }
        if let Some((key, body, failed)) = self.failed {
            let options = PutOptions { content_type: Some("application/x-ndjson+gzip"), ..PutOptions::json() };
            store.put(&key, body, options).await?;
            out.failed += failed;
        }
        Ok(())
    }
}

fn invalid(problem: Invalid) -> Error {
    Error::Invalid(problem.0)
}

#[cfg(test)]
mod tests;
