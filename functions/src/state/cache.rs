//! Decoded state objects kept between transactions in this process.

use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::Error;
use crate::state::shards::Delta;
use crate::storage::ObjectStore;

/// Decoded base objects (shards and base tables) kept between transactions in this process (a warm function,
/// `cdp up`): they are immutable and named by their content, so a kept copy is never stale. Bounded by the
/// decoded JSON's size (`CDP_STATE_CACHE_MB`, default 256), oldest first out.
pub(super) struct BaseCache {
    entries: std::collections::HashMap<String, (Arc<dyn std::any::Any + Send + Sync>, usize)>,
    order: std::collections::VecDeque<String>,
    bytes: usize,
    budget: usize,
}

pub(super) fn base_cache<T>(f: impl FnOnce(&mut BaseCache) -> T) -> T {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<BaseCache>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        let mb = std::env::var("CDP_STATE_CACHE_MB").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(256);
        std::sync::Mutex::new(BaseCache {
            entries: Default::default(),
            order: Default::default(),
            bytes: 0,
            budget: mb << 20,
        })
    });
    f(&mut cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// The base object `key`, decoded, from the cache or the store.
pub(super) async fn cached_base<S: ObjectStore, T: DeserializeOwned + Send + Sync + 'static>(
    store: &S,
    key: &str,
) -> Result<Arc<T>, Error> {
    if let Some(hit) = base_cache(|cache| cache.entries.get(key).map(|(value, _)| value.clone()))
        && let Ok(hit) = hit.downcast::<T>()
    {
        return Ok(hit);
    }
    let object = store
        .get(key)
        .await?
        .ok_or_else(|| Error::Corrupt(format!("the manifest names {key}, which does not exist")))?;
    let json = shared::storage::gunzip(&object.body).map_err(|e| Error::Corrupt(format!("{key}: {e}")))?;
    let value: Arc<T> = Arc::new(serde_json::from_slice(&json).map_err(|e| Error::Corrupt(format!("{key}: {e}")))?);
    let cost = json.len();
    base_cache(|cache| {
        if cost > cache.budget || cache.entries.contains_key(key) {
            return;
        }
        while cache.bytes + cost > cache.budget {
            let Some(oldest) = cache.order.pop_front() else { break };
            if let Some((_, size)) = cache.entries.remove(&oldest) {
                cache.bytes -= size;
            }
        }
        cache.entries.insert(key.to_string(), (value.clone(), cost));
        cache.order.push_back(key.to_string());
        cache.bytes += cost;
    });
    Ok(value)
}

/// Decoded delta objects by key (see [`Transaction::begin`]); bounded by the outstanding deltas of the last
/// manifest read.
pub(super) fn delta_cache<T>(f: impl FnOnce(&mut std::collections::HashMap<String, Arc<Delta>>) -> T) -> T {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, Arc<Delta>>>> =
        std::sync::OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut cache)
}
