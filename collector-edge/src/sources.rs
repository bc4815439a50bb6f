//! `config/sources.json`, the webhook sources' signing secrets (`secrets/v1/sources.json`, read only for a
//! webhook) and the suppression list (`privacy/v1/suppressed.json`), read from the bucket and cached per
//! isolate for `CONFIG_TTL_SECONDS` (default 30).
//!
//! Why the bucket and not a wrangler var: sources, keys and suppressions change at run time (`cdp source add`,
//! the API), and the bucket is where every component already reads configuration; a var would need a redeploy
//! per key. When a re-read fails, the last good copy keeps serving.

use std::cell::RefCell;
use std::rc::Rc;
use std::thread::LocalKey;

use shared::access::{IDENTIFIER_KEY_OBJECT, IdentifierKey, SUPPRESSED_KEY, Suppression, SuppressionCheck};
use shared::source::{SourceSecrets, Sources};
use shared::storage::CONFIG_SOURCES;
use shared::storage::keys::SOURCE_SECRETS;
use worker::Env;

use crate::s3::S3;

type Slot<T> = RefCell<Option<(i64, Rc<T>)>>;

thread_local! {
    static SOURCES: Slot<Sources> = const { RefCell::new(None) };
    static SUPPRESSION: Slot<Suppression> = const { RefCell::new(None) };
    static SECRETS: Slot<SourceSecrets> = const { RefCell::new(None) };
    /// The identifier key never changes: read once per isolate.
    static KEY: RefCell<Option<IdentifierKey>> = const { RefCell::new(None) };
}

/// The sources.
pub(crate) async fn get(s3: &S3, env: &Env) -> Result<Rc<Sources>, String> {
    cached(&SOURCES, CONFIG_SOURCES, |bytes| Sources::from_json(bytes).map_err(|e| e.to_string()), s3, env).await
}

/// The webhook sources' signing secrets.
pub(crate) async fn secrets(s3: &S3, env: &Env) -> Result<Rc<SourceSecrets>, String> {
    cached(&SECRETS, SOURCE_SECRETS, |bytes| SourceSecrets::from_json(bytes).map_err(|e| e.to_string()), s3, env).await
}

/// The suppression list with the deployment's identifier key its hashes are made with (`None` when nothing is
/// suppressed; the key is read only then): the events of people on it are not stored.
pub(crate) async fn suppression(s3: &S3, env: &Env) -> Result<Option<SuppressionCheck>, String> {
    let list =
        cached(&SUPPRESSION, SUPPRESSED_KEY, |bytes| Suppression::from_json(bytes).map_err(|e| e.to_string()), s3, env)
            .await?;
    if list.is_empty() {
        return Ok(None);
    }
    let key = match KEY.with(|k| k.borrow().clone()) {
        Some(key) => key,
        None => {
            let stored = s3.get(IDENTIFIER_KEY_OBJECT, crate::now()).await?;
            let stored = stored.ok_or_else(|| format!("{IDENTIFIER_KEY_OBJECT} is missing"))?;
            let key = IdentifierKey::from_stored(&stored).map_err(|e| e.to_string())?;
            KEY.with(|k| *k.borrow_mut() = Some(key.clone()));
            key
        }
    };
    Ok(Some(SuppressionCheck { list: (*list).clone(), key }))
}

async fn cached<T: Default>(
    slot: &'static LocalKey<Slot<T>>,
    key: &str,
    parse: fn(&[u8]) -> Result<T, String>,
    s3: &S3,
    env: &Env,
) -> Result<Rc<T>, String> {
    let ttl_ms =
        env.var("CONFIG_TTL_SECONDS").ok().and_then(|v| v.to_string().parse::<i64>().ok()).unwrap_or(30).max(0) * 1000;
    let now = crate::now();
    let cached = slot.with(|c| c.borrow().clone());
    if let Some((at, value)) = &cached
        && now.unix_millis() - at < ttl_ms
    {
        return Ok(value.clone());
    }
    let fresh = match s3.get(key, now).await {
        Ok(Some(bytes)) => parse(&bytes),
        Ok(None) => Ok(T::default()),
        Err(e) => Err(e),
    };
    match fresh {
        Ok(value) => {
            let value = Rc::new(value);
            slot.with(|c| *c.borrow_mut() = Some((now.unix_millis(), value.clone())));
            Ok(value)
        }
        Err(error) => match cached {
            Some((_, stale)) => {
                worker::console_warn!("could not re-read {key}, serving the last good copy: {error}");
                Ok(stale)
            }
            None => Err(error),
        },
    }
}
