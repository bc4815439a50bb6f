//! A local folder as an object store: the embedded default of `cdp up`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shared::ids::sha256_hex_bytes;

use super::{Condition, Object, ObjectMeta, ObjectStore, PutOptions, StoreError, check_key};

/// Options that create a file only its owner can read and write (`0600`).
pub fn private_file() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates `dir` and its missing parents, each only its owner may enter (`0700`).
pub fn create_dirs(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Closes `root` to other users (`0700`) when they may enter it.
fn private_root(root: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(root)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(folder = %root.display(), mode = format!("{:o}", mode & 0o777), "the data folder was open to other users; it is now 0700");
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode & 0o7700))?;
        }
    }
    Ok(())
}

/// Objects as files under a root folder, keys as relative paths.
///
/// Writes are durable before they return (written to a temporary file, `fsync`ed, then linked or renamed into
/// place, and the folder `fsync`ed). `If-None-Match` is atomic across processes (a hard link fails if the name
/// exists); `If-Match` is atomic across processes too: the compare and the swap happen under an exclusive
/// lock on `.tmp/swap.lock` (so `cdp unlink` can run beside `cdp up`). ETags are the SHA-256 of the content.
#[derive(Debug, Clone)]
pub struct FsStore {
    root: PathBuf,
    counter: Arc<AtomicU64>,
}

impl FsStore {
    /// A store rooted at `root`, created if missing. The data is personal and holds secrets: folders are
    /// created `0700` and files `0600`, and a root that other users may enter is closed to them (its contents
    /// then are, whatever older versions created them with).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        create_dirs(&root.join(".tmp")).map_err(|e| unavailable(&root, e))?;
        private_root(&root).map_err(|e| unavailable(&root, e))?;
        Ok(Self { root, counter: Arc::default() })
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn put_blocking(&self, key: &str, body: &[u8], condition: &Condition) -> Result<String, StoreError> {
        let path = self.path(key)?;
        let parent = path.parent().unwrap_or(&self.root);
        create_dirs(parent).map_err(|e| unavailable(parent, e))?;
        let tmp = self.root.join(".tmp").join(format!(
            "{}-{}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = private_file().open(&tmp).map_err(|e| unavailable(&tmp, e))?;
            file.write_all(body).map_err(|e| unavailable(&tmp, e))?;
            file.sync_all().map_err(|e| unavailable(&tmp, e))?;
            match condition {
                Condition::IfNoneMatch => match std::fs::hard_link(&tmp, &path) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(StoreError::PreconditionFailed),
                    Err(e) => Err(unavailable(&path, e)),
                },
                Condition::IfMatch(expected) => {
                    let _file_lock = self.lock_file()?;
                    let current = match std::fs::read(&path) {
                        Ok(bytes) => Some(etag(&bytes)),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                        Err(e) => return Err(unavailable(&path, e)),
                    };
                    if current.as_deref() != Some(expected.as_str()) {
                        return Err(StoreError::PreconditionFailed);
                    }
                    std::fs::rename(&tmp, &path).map_err(|e| unavailable(&path, e))
                }
                Condition::None => {
                    let _file_lock = self.lock_file()?;
                    std::fs::rename(&tmp, &path).map_err(|e| unavailable(&path, e))
                }
            }
        })();
        let _ = std::fs::remove_file(&tmp);
        result?;
        // Make the new name durable too.
        if let Ok(dir) = std::fs::File::open(parent) {
            let _ = dir.sync_all();
        }
        Ok(etag(body))
    }

    /// An exclusive lock shared with every thread and process using this folder (each call opens its own file
    /// description, so `flock` serializes threads too), released when dropped.
    fn lock_file(&self) -> Result<std::fs::File, StoreError> {
        let path = self.root.join(".tmp").join("swap.lock");
        let file = private_file().truncate(false).open(&path).map_err(|e| unavailable(&path, e))?;
        file.lock().map_err(|e| unavailable(&path, e))?;
        Ok(file)
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        // Walk from the deepest folder the prefix names, then filter by the whole prefix.
        let dir_part = prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
        let start = if dir_part.is_empty() { self.root.clone() } else { self.path(dir_part)? };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(unavailable(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| unavailable(&dir, e))?;
                let path = entry.path();
                let Ok(relative) = path.strip_prefix(&self.root) else { continue };
                let Some(key) = relative.to_str().map(|k| k.replace(std::path::MAIN_SEPARATOR, "/")) else {
                    continue;
                };
                if key.starts_with(".tmp") {
                    continue;
                }
                let meta = entry.metadata().map_err(|e| unavailable(&path, e))?;
                if meta.is_dir() {
                    stack.push(path);
                } else if key.starts_with(prefix) {
                    out.push(ObjectMeta { key, size: meta.len() });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

fn etag(bytes: &[u8]) -> String {
    format!("\"{}\"", &sha256_hex_bytes(bytes)[..32])
}

fn unavailable(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{}: {e}", path.display()))
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Unavailable(format!("storage task failed: {e}"))
}

impl ObjectStore for FsStore {
    async fn put(&self, key: &str, body: Vec<u8>, options: PutOptions) -> Result<String, StoreError> {
        let store = self.clone();
        let key = key.to_string();
        tokio::task::spawn_blocking(move || store.put_blocking(&key, &body, &options.condition))
            .await
            .map_err(join_error)?
    }

    async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        let path = self.path(key)?;
        tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(body) => Ok(Some(Object { etag: etag(&body), body })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(&path, e)),
        })
        .await
        .map_err(join_error)?
    }

    async fn get_range(&self, key: &str, start: u64, len: u64) -> Result<Option<Vec<u8>>, StoreError> {
        use std::io::{Read as _, Seek as _};
        let path = self.path(key)?;
        tokio::task::spawn_blocking(move || {
            let mut file = match std::fs::File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(unavailable(&path, e)),
            };
            let mut body = Vec::new();
            file.seek(std::io::SeekFrom::Start(start)).map_err(|e| unavailable(&path, e))?;
            file.take(len).read_to_end(&mut body).map_err(|e| unavailable(&path, e))?;
            Ok(Some(body))
        })
        .await
        .map_err(join_error)?
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let store = self.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || store.list_blocking(&prefix)).await.map_err(join_error)?
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        tokio::task::spawn_blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(unavailable(&path, e)),
        })
        .await
        .map_err(join_error)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[tokio::test]
    async fn files_are_the_owner_s_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("data");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = FsStore::open(&root).unwrap();
        store.put("config/destinations.json", b"[]".to_vec(), PutOptions::json()).await.unwrap();
        store.put("raw/v1/dt=2026-12-07/hr=10/x.ndjson.gz", b"x".to_vec(), PutOptions::ndjson_gz()).await.unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700, "the root is closed to others");
        assert_eq!(mode(&root.join("config")), 0o700);
        assert_eq!(mode(&root.join("raw/v1/dt=2026-12-07/hr=10")), 0o700);
        assert_eq!(mode(&root.join("config/destinations.json")), 0o600);
        assert_eq!(mode(&root.join("raw/v1/dt=2026-12-07/hr=10/x.ndjson.gz")), 0o600);
    }

    #[tokio::test]
    async fn folder_store_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        super::super::conformance::check(&store, "contract").await;
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        for key in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            assert!(
                matches!(store.put(key, vec![], PutOptions::json()).await, Err(StoreError::InvalidKey(_))),
                "{key}"
            );
        }
    }

    #[tokio::test]
    async fn a_file_where_a_folder_should_be_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("raw"), b"in the way").unwrap();
        let err = store.put("raw/v1/x.ndjson.gz", vec![1], PutOptions::ndjson_gz()).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    }
}
