//! One `cdp up` per data folder: the runner holds an exclusive lock on `DIR/.cdp-up.lock` while it runs. Two
//! runners on one folder keep the state correct (its writes are compare-and-swap) but would both deliver every
//! webhook; the second is refused at start, naming the process that holds the folder. The operating system
//! releases the lock when the process ends, however it ends (a crash, SIGKILL), so a stale lock never blocks
//! a restart. The other commands (`cdp profile`, `cdp tags compute`, ...) stay usable beside a running runner.

use std::io::{Read as _, Seek as _, Write as _};
use std::path::Path;

use anyhow::{Context as _, bail};

/// The lock file's name in the data folder.
pub(crate) const LOCK_FILE: &str = ".cdp-up.lock";

/// Held while the runner runs; dropping it (or the process ending) releases the folder.
#[derive(Debug)]
pub(crate) struct FolderLock {
    _file: std::fs::File,
}

/// Takes the data folder `root` for this process, or says which process holds it.
pub(crate) fn lock(root: &Path) -> anyhow::Result<FolderLock> {
    let path = root.join(LOCK_FILE);
    let mut file = functions::storage::private_file()
        .read(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())?;
            file.flush()?;
            Ok(FolderLock { _file: file })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() { "another process".to_string() } else { format!("process {holder}") };
            bail!(
                "the data folder {} is in use by another `cdp up` ({who}); stop it first, or give this one another \
                 --data folder (two runners on one folder would deliver every webhook twice)",
                root.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_folder_is_refused_with_the_holder_named_until_the_first_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path()).unwrap();
        let refused = lock(dir.path()).unwrap_err().to_string();
        assert!(refused.contains(&format!("process {}", std::process::id())), "{refused}");
        assert!(refused.contains("in use by another `cdp up`"), "{refused}");
        drop(first);
        lock(dir.path()).expect("free again once released");
    }
}
