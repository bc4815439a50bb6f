//! Events grouped by chunk of profiles in temporary files: the full recompute and the backfill never hold the
//! events of every profile at once, only one chunk's (`RECOMPUTE_CHUNK` profiles; a backfill batch).
//!
//! Events are appended to their chunk's buffer as they are read (the lake's parts, then the raw objects not
//! compacted yet), in a compact binary row; a buffer past its share of [`BUFFERED`] is appended to the chunk's
//! file under the temporary directory (`/tmp` in Lambda: its ephemeral storage is sized for it). The directory
//! is removed when the spill is dropped, whatever happened.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use shared::event::{EventType, message_id_of};

use crate::Error;
use crate::lake::TagEvent;

/// Bytes kept in memory over all chunks' buffers before they go to their files.
const BUFFERED: usize = 64 << 20;

/// Properties longer than this (bytes of JSON) are cut, before they are written, to those the spill's reader
/// wants ([`Spill::keeping`]); shorter ones are written as they are (picking would cost more than it saves).
const TRIM_OVER: usize = 256;

/// Events by chunk of profiles ([`Spill::push`], then [`Spill::seal`] and [`Spill::read`]).
#[derive(Debug)]
pub(crate) struct Spill {
    scratch: Scratch,
    /// The first profile number of each chunk, ascending; the last chunk ends at `end`.
    starts: Vec<u32>,
    end: u32,
    buffers: Vec<Vec<u8>>,
    flush_at: usize,
    /// The properties kept of an event whose properties are long (sorted); all when `None`.
    wanted: Option<Vec<String>>,
    /// Bytes written to files.
    pub(crate) spilled: u64,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Machine(format!("the recompute's temporary files: {what}: {e}"))
}

impl Spill {
    /// A spill for `profiles` profiles numbered from 0, cut into chunks of `chunk`, in a new directory under
    /// the system's temporary directory.
    pub(crate) fn new(profiles: usize, chunk: usize) -> Result<Self, Error> {
        let starts = (0..profiles).step_by(chunk.max(1)).map(|n| n as u32).collect();
        Self::cut(starts, profiles)
    }

    /// A spill for `profiles` profiles numbered from 0, in chunks starting at `starts` (ascending, from 0; a
    /// chunk may be empty).
    pub(crate) fn cut(starts: Vec<u32>, profiles: usize) -> Result<Self, Error> {
        let end = u32::try_from(profiles).map_err(|_| Error::Internal("more than 2^32 profiles".into()))?;
        if starts.first().is_some_and(|s| *s != 0) || starts.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::Internal("chunks must start at 0 and ascend".into()));
        }
        let buckets = starts.len();
        Ok(Self {
            scratch: Scratch::new()?,
            starts,
            end,
            buffers: vec![Vec::new(); buckets],
            flush_at: (BUFFERED / buckets.max(1)).clamp(4 << 10, 1 << 20),
            wanted: None,
            spilled: 0,
        })
    }

    /// Keeps of an event's properties, when they are long, only those named in `wanted` (sorted): the others
    /// would take room in the files and time to read back for nothing.
    pub(crate) fn keeping(mut self, wanted: Vec<String>) -> Self {
        self.wanted = Some(wanted);
        self
    }

    /// Chunks.
    pub(crate) fn chunks(&self) -> usize {
        self.buffers.len()
    }

    /// Adds an event of profile number `profile`.
    pub(crate) fn push(&mut self, profile: u32, event: &TagEvent) -> Result<(), Error> {
        let bucket = self.starts.partition_point(|start| *start <= profile).wrapping_sub(1);
        let Some(buffer) = self.buffers.get_mut(bucket).filter(|_| profile < self.end) else {
            return Err(Error::Internal(format!("profile number {profile} is past the spill's profiles")));
        };
        let picked;
        let properties = match (event.properties.as_deref(), &self.wanted) {
            (Some(text), Some(wanted)) if text.len() > TRIM_OVER => {
                let kept = event.properties_of(wanted)?;
                picked = serde_json::to_string(&kept).map_err(Error::encoding)?;
                Some(picked.as_str())
            }
            (properties, _) => properties,
        };
        encode(buffer, profile, event, properties);
        if buffer.len() >= self.flush_at {
            self.flush(bucket)?;
        }
        Ok(())
    }

    fn path(&self, bucket: usize) -> PathBuf {
        self.scratch.dir.join(format!("{bucket:08}.rows"))
    }

    fn flush(&mut self, bucket: usize) -> Result<(), Error> {
        if self.buffers[bucket].is_empty() {
            return Ok(());
        }
        let mut file = crate::storage::private_file()
            .truncate(false)
            .append(true)
            .open(self.path(bucket))
            .map_err(io("opening a chunk's file"))?;
        file.write_all(&self.buffers[bucket]).map_err(io("writing a chunk's file"))?;
        self.spilled += self.buffers[bucket].len() as u64;
        self.buffers[bucket] = Vec::new();
        Ok(())
    }

    /// Writes what is buffered to the files and frees the buffers; [`Spill::read`] reads the files.
    pub(crate) fn seal(&mut self) -> Result<(), Error> {
        for bucket in 0..self.buffers.len() {
            self.flush(bucket)?;
        }
        Ok(())
    }

    /// Chunk `bucket`'s events with their profile numbers, sorted by profile, time and messageId, each
    /// event (source and messageId) once per profile (a compaction retried, or finishing while the events were read, can leave
    /// an event in two places). Reads what [`Spill::seal`] wrote.
    pub(crate) fn read(&self, bucket: usize) -> Result<Vec<(u32, TagEvent)>, Error> {
        let bytes = match std::fs::read(self.path(bucket)) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("reading a chunk's file")(e)),
        };
        let mut rows = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            rows.push(decode(&bytes, &mut at).ok_or_else(|| Error::Machine("a chunk's file is cut short".into()))?);
        }
        // By messageId before source, the order ingest applies events in.
        fn order(e: &TagEvent) -> (i64, &str, &str) {
            (e.at, message_id_of(&e.dedup_key), &e.dedup_key)
        }
        rows.sort_by(|(p, a), (q, b)| (p, order(a)).cmp(&(q, order(b))));
        rows.dedup_by(|(p, a), (q, b)| p == q && a.dedup_key == b.dedup_key);
        Ok(rows)
    }
}

/// Removes the directories of spills whose process is gone (a function stopped by its timeout or its memory
/// limit leaves them behind, and `/tmp` outlives it in a warm Lambda environment). Only where `/proc` says
/// which processes run.
fn clear_stale(temp: &std::path::Path) {
    let proc = std::path::Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(temp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("cdp-recompute-")?.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok_and(|pid| pid != std::process::id()) && !proc.join(pid).exists() {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(dir = %entry.path().display(), "removed an earlier recompute's temporary files")
                }
                Err(e) => {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "an earlier recompute's temporary files stay")
                }
            }
        }
    }
}

/// A directory of the recompute's own under the system's temporary directory (`cdp-recompute-<pid>-…`),
/// removed when dropped, whatever happened — or, when the process was stopped, by the next one.
#[derive(Debug)]
pub(crate) struct Scratch {
    pub(crate) dir: PathBuf,
}

impl Scratch {
    pub(crate) fn new() -> Result<Self, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "cdp-recompute-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        clear_stale(&std::env::temp_dir());
        // Personal data in a shared /tmp: the folder is its owner's alone (0700).
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).map_err(io("creating the directory"))?;
        Ok(Self { dir })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "the recompute's temporary files stay");
        }
    }
}

/// A text field: its length (`u32::MAX` for none), then its bytes.
fn put_text(buffer: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => buffer.extend_from_slice(&u32::MAX.to_le_bytes()),
        Some(text) => {
            buffer.extend_from_slice(&(text.len() as u32).to_le_bytes());
            buffer.extend_from_slice(text.as_bytes());
        }
    }
}

/// profile (u32), at, received_at (i64), type (index in [`EventType::ALL`]), dedup key, event, properties.
/// Writes `event` with `properties` for its own.
fn encode(buffer: &mut Vec<u8>, profile: u32, event: &TagEvent, properties: Option<&str>) {
    buffer.extend_from_slice(&profile.to_le_bytes());
    buffer.extend_from_slice(&event.at.to_le_bytes());
    buffer.extend_from_slice(&event.received_at.to_le_bytes());
    buffer.push(EventType::ALL.iter().position(|k| *k == event.kind).unwrap_or_default() as u8);
    put_text(buffer, Some(&event.dedup_key));
    put_text(buffer, event.event.as_deref());
    put_text(buffer, properties);
}

fn take<'b>(bytes: &'b [u8], at: &mut usize, n: usize) -> Option<&'b [u8]> {
    let slice = bytes.get(*at..at.checked_add(n)?)?;
    *at += n;
    Some(slice)
}

fn take_text(bytes: &[u8], at: &mut usize) -> Option<Option<Box<str>>> {
    let len = u32::from_le_bytes(take(bytes, at, 4)?.try_into().ok()?);
    if len == u32::MAX {
        return Some(None);
    }
    let text = std::str::from_utf8(take(bytes, at, len as usize)?).ok()?;
    Some(Some(text.into()))
}

fn decode(bytes: &[u8], at: &mut usize) -> Option<(u32, TagEvent)> {
    let profile = u32::from_le_bytes(take(bytes, at, 4)?.try_into().ok()?);
    let time = i64::from_le_bytes(take(bytes, at, 8)?.try_into().ok()?);
    let received_at = i64::from_le_bytes(take(bytes, at, 8)?.try_into().ok()?);
    let kind = *EventType::ALL.get(usize::from(take(bytes, at, 1)?[0]))?;
    let dedup_key = take_text(bytes, at)??;
    let event = take_text(bytes, at)?;
    let properties = take_text(bytes, at)?;
    Some((profile, TagEvent { dedup_key, kind, event, at: time, received_at, properties }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, at: i64, properties: Option<&str>) -> TagEvent {
        TagEvent {
            dedup_key: id.into(),
            kind: EventType::Track,
            event: Some("Order Completed".into()),
            at,
            received_at: at + 1,
            properties: properties.map(Into::into),
        }
    }

    #[test]
    fn long_properties_keep_only_those_wanted_short_ones_all() {
        let wanted = vec!["category".to_string(), "re\"venue".to_string()];
        let long = format!(r#"{{"category":"shoes","note":"{}","re\"venue":12.5,"skus":[1,2,3]}}"#, "x".repeat(400));
        let short = r#"{"category":"hats","note":"small"}"#;
        let mut spill = Spill::new(2, 10).unwrap().keeping(wanted);
        spill.push(0, &event("long", 1, Some(&long))).unwrap();
        spill.push(1, &event("short", 2, Some(short))).unwrap();
        spill.push(1, &event("none", 3, None)).unwrap();
        spill.seal().unwrap();
        assert!(spill.spilled < 300, "the long note is not written: {} bytes", spill.spilled);
        let rows = spill.read(0).unwrap();
        let properties: Vec<Option<&str>> = rows.iter().map(|(_, e)| e.properties.as_deref()).collect();
        assert_eq!(properties, [Some(r#"{"category":"shoes","re\"venue":12.5}"#), Some(short), None]);
        let mut all = Spill::new(1, 10).unwrap();
        all.push(0, &event("long", 1, Some(&long))).unwrap();
        all.seal().unwrap();
        assert_eq!(all.read(0).unwrap()[0].1.properties.as_deref(), Some(long.as_str()), "no wanted list: all kept");
    }

    #[test]
    fn events_come_back_by_chunk_sorted_once_each_and_the_files_go_with_the_spill() {
        let mut spill = Spill::new(25, 10).unwrap();
        assert_eq!(spill.chunks(), 3);
        // A small flush threshold: most rows go through the files, the rest through seal.
        spill.flush_at = 64;
        let page = TagEvent { kind: EventType::Page, event: None, ..event("m4", 5, None) };
        spill.push(12, &event("m2", 20, Some(r#"{"total":12.5,"sku":"é"}"#))).unwrap();
        spill.push(3, &event("m1", 10, None)).unwrap();
        spill.push(12, &event("m3", 15, Some("{}"))).unwrap();
        spill.push(11, &page).unwrap();
        // The same event again (a compaction seen twice): kept once.
        spill.push(12, &event("m2", 20, Some(r#"{"total":12.5,"sku":"é"}"#))).unwrap();
        spill.push(24, &event("m5", 1, None)).unwrap();
        assert!(spill.push(30, &event("m6", 1, None)).is_err(), "a profile past the spill is refused");
        spill.seal().unwrap();
        assert!(spill.spilled > 0);

        assert_eq!(spill.read(0).unwrap(), vec![(3, event("m1", 10, None))]);
        let second = spill.read(1).unwrap();
        let order: Vec<(u32, &str)> = second.iter().map(|(p, e)| (*p, &*e.dedup_key)).collect();
        assert_eq!(order, vec![(11, "m4"), (12, "m3"), (12, "m2")]);
        assert_eq!(second[0].1, page);
        assert_eq!(second[2].1, event("m2", 20, Some(r#"{"total":12.5,"sku":"é"}"#)));
        assert_eq!(spill.read(2).unwrap(), vec![(24, event("m5", 1, None))]);
        // Read twice (the recompute's two passes): the same.
        assert_eq!(spill.read(1).unwrap(), second);

        let dir = spill.scratch.dir.clone();
        assert!(dir.exists());
        drop(spill);
        assert!(!dir.exists(), "the temporary files are removed with the spill");
    }

    #[test]
    fn files_left_by_a_process_that_is_gone_are_removed() {
        // No process has this id (Linux's largest is 2^22); one of this process stays.
        let gone = std::env::temp_dir().join("cdp-recompute-999999999-1-1");
        let ours = std::env::temp_dir().join(format!("cdp-recompute-{}-1-1", std::process::id()));
        for dir in [&gone, &ours] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("00000000.rows"), b"rows").unwrap();
        }
        let spill = Spill::new(1, 10).unwrap();
        assert!(!gone.exists(), "a gone process's files are removed");
        assert!(ours.exists(), "a running process's files stay");
        std::fs::remove_dir_all(&ours).unwrap();
        drop(spill);
    }

    #[test]
    fn chunks_of_any_size_even_empty() {
        // Chunks [0, 2), [2, 2) (empty), [2, 7).
        let mut spill = Spill::cut(vec![0, 2, 2], 7).unwrap();
        assert_eq!(spill.chunks(), 3);
        for (profile, id) in [(6, "m6"), (0, "m0"), (1, "m1"), (2, "m2")] {
            spill.push(profile, &event(id, 1, None)).unwrap();
        }
        assert!(spill.push(7, &event("m7", 1, None)).is_err(), "past the last profile");
        spill.seal().unwrap();
        let numbers = |chunk| spill.read(chunk).unwrap().into_iter().map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!((numbers(0), numbers(1), numbers(2)), (vec![0, 1], vec![], vec![2, 6]));
        assert!(Spill::cut(vec![1, 2], 3).is_err() && Spill::cut(vec![0, 2, 1], 3).is_err(), "bad cuts");
    }

    #[test]
    fn a_cut_file_is_an_error_not_a_panic() {
        let mut spill = Spill::new(1, 10).unwrap();
        spill.push(0, &event("m1", 1, Some("{}"))).unwrap();
        spill.seal().unwrap();
        let path = spill.path(0);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(spill.read(0).unwrap_err().to_string().contains("cut short"));
    }
}
