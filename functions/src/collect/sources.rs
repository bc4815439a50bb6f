//! Loading and saving `config/sources.json`, and a short-lived cache of it.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::access::SuppressionCheck;
use shared::source::{SourceSecrets, Sources};
use shared::storage::CONFIG_SOURCES;
use shared::storage::keys::SOURCE_SECRETS;
use tokio::sync::RwLock;

use crate::Error;
use crate::storage::ObjectStore;

/// Reads the sources file; a missing file means no sources yet.
pub async fn load_sources<S: ObjectStore>(store: &S) -> Result<Sources, Error> {
    match store.get(CONFIG_SOURCES).await? {
        Some(object) => Ok(Sources::from_json(&object.body)?),
        None => Ok(Sources::default()),
    }
}

/// Changes the sources file under compare-and-swap: `change` sees the current sources (none when absent) and
/// runs again on the new ones when another writer changed them meanwhile, so the API and `cdp` never lose each
/// other's changes.
pub async fn update_sources<S: ObjectStore, R, E: From<Error>>(
    store: &S,
    mut change: impl FnMut(&mut Sources) -> Result<R, E>,
) -> Result<R, E> {
    crate::config::update(store, CONFIG_SOURCES, "application/json", |bytes| {
        let mut sources = match bytes {
            Some(bytes) => Sources::from_json(bytes).map_err(Error::from)?,
            None => Sources::default(),
        };
        let result = change(&mut sources)?;
        Ok((sources.to_json(), result))
    })
    .await
}

/// Reads the webhook sources' signing secrets (none when the file is absent): only to verify webhooks.
pub async fn load_source_secrets<S: ObjectStore>(store: &S) -> Result<SourceSecrets, Error> {
    match store.get(SOURCE_SECRETS).await? {
        Some(object) => Ok(SourceSecrets::from_json(&object.body)?),
        None => Ok(SourceSecrets::default()),
    }
}

/// Changes the signing secrets under compare-and-swap, as [`update_sources`] changes the sources.
pub async fn update_source_secrets<S: ObjectStore, R, E: From<Error>>(
    store: &S,
    mut change: impl FnMut(&mut SourceSecrets) -> Result<R, E>,
) -> Result<R, E> {
    crate::config::update(store, SOURCE_SECRETS, "application/json", |bytes| {
        let mut secrets = match bytes {
            Some(bytes) => SourceSecrets::from_json(bytes).map_err(Error::from)?,
            None => SourceSecrets::default(),
        };
        let result = change(&mut secrets)?;
        Ok((secrets.to_json(), result))
    })
    .await
}

/// The sources, and the suppression list, each re-read at most every `ttl`, so a new source or key, or a
/// person's suppression, takes effect without a restart. When a re-read fails, the last good copy keeps
/// serving (and the failure is logged).
#[derive(Debug)]
pub struct SourcesCache {
    sources: Fresh<Sources>,
    secrets: Fresh<SourceSecrets>,
    suppression: Fresh<Option<SuppressionCheck>>,
}

impl SourcesCache {
    /// A cache that re-reads after `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self { sources: Fresh::new(ttl), secrets: Fresh::new(ttl), suppression: Fresh::new(ttl) }
    }

    /// The current sources, reading the store if the copy is older than the TTL.
    pub async fn get<S: ObjectStore>(&self, store: &S) -> Result<Arc<Sources>, Error> {
        self.sources.get("sources", || load_sources(store)).await
    }

    /// The webhook sources' signing secrets, reading the store if the copy is older than the TTL.
    pub async fn secrets<S: ObjectStore>(&self, store: &S) -> Result<Arc<SourceSecrets>, Error> {
        self.secrets.get("the sources' signing secrets", || load_source_secrets(store)).await
    }

    /// The current suppression list with the identifier key (`None` when nothing is suppressed), reading the
    /// store if the copy is older than the TTL.
    pub async fn suppression<S: ObjectStore>(&self, store: &S) -> Result<Arc<Option<SuppressionCheck>>, Error> {
        self.suppression.get("the suppression list", || crate::suppression::load_suppression_check(store)).await
    }
}

/// One value re-read at most every `ttl`.
#[derive(Debug)]
struct Fresh<T> {
    ttl: Duration,
    current: RwLock<Option<(Instant, Arc<T>)>>,
}

impl<T> Fresh<T> {
    fn new(ttl: Duration) -> Self {
        Self { ttl, current: RwLock::new(None) }
    }

    async fn get<F: Future<Output = Result<T, Error>>>(
        &self,
        what: &str,
        load: impl FnOnce() -> F,
    ) -> Result<Arc<T>, Error> {
        if let Some((at, value)) = self.current.read().await.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(value.clone());
        }
        let mut current = self.current.write().await;
        if let Some((at, value)) = current.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(value.clone());
        }
        match load().await {
            Ok(value) => {
                let value = Arc::new(value);
                *current = Some((Instant::now(), value.clone()));
                Ok(value)
            }
            Err(error) => match current.as_ref() {
                Some((_, stale)) => {
                    tracing::warn!(%error, "could not re-read {what}; serving the last good copy");
                    Ok(stale.clone())
                }
                None => Err(error),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use shared::ids::Entropy;
    use shared::source::new_source;

    use super::*;
    use crate::storage::FsStore;

    #[tokio::test]
    async fn cache_sees_new_sources_after_the_ttl_and_survives_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let cache = SourcesCache::new(Duration::from_millis(50));
        assert!(cache.get(&store).await.unwrap().is_empty());

        let (source, key) = new_source("web", "Web", &mut Entropy::from_seed([4; 32]));
        let mut sources = Sources::default();
        sources.add(source).unwrap();
        update_sources(&store, |all| {
            *all = sources.clone();
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
        assert!(cache.get(&store).await.unwrap().authenticate(&key).is_none(), "cached copy still fresh");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(cache.get(&store).await.unwrap().authenticate(&key).is_some(), "re-read after the TTL");

        store.put(CONFIG_SOURCES, b"{broken".to_vec(), crate::storage::PutOptions::json()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(cache.get(&store).await.unwrap().authenticate(&key).is_some(), "last good copy serves");
        assert!(matches!(load_sources(&store).await, Err(Error::Config(_))));
    }
}
