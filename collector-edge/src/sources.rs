//! `config/sources.json`, read from the bucket and cached per isolate for `CONFIG_TTL_SECONDS` (default 30).
//!
//! Why the bucket and not a wrangler var: sources and keys change at run time (`cdp source add`, the API),
//! and the bucket is where every component already reads configuration; a var would need a redeploy per key.
//! When a re-read fails, the last good copy keeps serving.

use std::cell::RefCell;
use std::rc::Rc;

use shared::source::Sources;
use shared::storage::CONFIG_SOURCES;
use worker::Env;

use crate::s3::S3;

thread_local! {
    static CACHE: RefCell<Option<(i64, Rc<Sources>)>> = const { RefCell::new(None) };
}

pub(crate) async fn get(s3: &S3, env: &Env) -> Result<Rc<Sources>, String> {
    let ttl_ms =
        env.var("CONFIG_TTL_SECONDS").ok().and_then(|v| v.to_string().parse::<i64>().ok()).unwrap_or(30).max(0) * 1000;
    let now = crate::now();
    let cached = CACHE.with(|c| c.borrow().clone());
    if let Some((at, sources)) = &cached
        && now.unix_millis() - at < ttl_ms
    {
        return Ok(sources.clone());
    }
    let fresh = match s3.get(CONFIG_SOURCES, now).await {
        Ok(Some(bytes)) => Sources::from_json(&bytes).map_err(|e| e.to_string()),
        Ok(None) => Ok(Sources::default()),
        Err(e) => Err(e),
    };
    match fresh {
        Ok(sources) => {
            let sources = Rc::new(sources);
            CACHE.with(|c| *c.borrow_mut() = Some((now.unix_millis(), sources.clone())));
            Ok(sources)
        }
        Err(error) => match cached {
            Some((_, stale)) => {
                worker::console_warn!("could not re-read sources, serving the last good copy: {error}");
                Ok(stale)
            }
            None => Err(error),
        },
    }
}
