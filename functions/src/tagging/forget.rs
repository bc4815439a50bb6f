//! Forgetting profiles in what the full recompute wrote: their tag values (`tags/v1/values.json.gz`), their
//! membership in audience snapshots and their ids in audience diffs. An erasure calls [`forget`]; the next
//! recompute would not bring them back, since their state and events are gone by then.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::audiences::{Diff, Snapshot};
use shared::storage::keys;

use super::gz;
use crate::Error;
use crate::storage::{ObjectStore, PutOptions};

/// `tags/v1/values.json.gz` as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Values {
    computed_at: i64,
    profiles: BTreeMap<String, BTreeMap<String, Value>>,
}

/// `audiences/v1/<id>/diffs/<computedAt>.json` as stored.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StoredDiff {
    pub(super) computed_at: i64,
    #[serde(flatten)]
    pub(super) diff: Diff,
}

/// Removes `profiles` from every tag value, audience snapshot and diff, and drops saved insights' kept results;
/// returns the objects rewritten or removed.
pub async fn forget<S: ObjectStore>(store: &S, profiles: &BTreeSet<String>) -> Result<usize, Error> {
    let mut rewritten = 0;
    if let Some(object) = store.get(keys::TAG_VALUES).await?
        && let Some(mut values) = decoded::<Values>(keys::TAG_VALUES, &object.body, true)
    {
        let before = values.profiles.len();
        values.profiles.retain(|id, _| !profiles.contains(id));
        if values.profiles.len() != before {
            let body = serde_json::to_vec(&values).map_err(Error::encoding)?;
            store.put(keys::TAG_VALUES, shared::storage::gzip(&body), gz()).await?;
            rewritten += 1;
        }
    }
    for meta in store.list("audiences/v1/").await? {
        let key = meta.key;
        if key.ends_with("/snapshot.json.gz") {
            let Some(object) = store.get(&key).await? else { continue };
            let Some(mut snapshot) = decoded::<Snapshot>(&key, &object.body, true) else { continue };
            let before = snapshot.members.len();
            snapshot.members.retain(|id| !profiles.contains(id));
            if snapshot.members.len() != before {
                let body = serde_json::to_vec(&snapshot).map_err(Error::encoding)?;
                store.put(&key, shared::storage::gzip(&body), gz()).await?;
                rewritten += 1;
            }
        } else if key.contains("/diffs/") && key.ends_with(".json") {
            let Some(object) = store.get(&key).await? else { continue };
            let Some(mut stored) = decoded::<StoredDiff>(&key, &object.body, false) else { continue };
            let before = stored.diff.entered.len() + stored.diff.exited.len();
            stored.diff.entered.retain(|id| !profiles.contains(id));
            stored.diff.exited.retain(|id| !profiles.contains(id));
            if stored.diff.entered.len() + stored.diff.exited.len() != before {
                let body = serde_json::to_vec(&stored).map_err(Error::encoding)?;
                store.put(&key, body, PutOptions::json()).await?;
                rewritten += 1;
            }
        }
    }
    // Saved insights' kept results may list the person: all are dropped, and computed again when next run.
    for meta in store.list(keys::ANALYSIS_RESULTS).await? {
        store.delete(&meta.key).await?;
        rewritten += 1;
    }
    Ok(rewritten)
}

/// `body` (gzipped when `zipped`) decoded; `None`, logged, when it does not decode: an object the recompute
/// will rewrite must not hold up an erasure (the recompute's next run leaves the erased profiles out anyway).
fn decoded<T: serde::de::DeserializeOwned>(key: &str, body: &[u8], zipped: bool) -> Option<T> {
    let json = if zipped { shared::storage::gunzip(body).map_err(|e| e.to_string()) } else { Ok(body.to_vec()) };
    match json.and_then(|json| serde_json::from_slice(&json).map_err(|e| e.to_string())) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::error!(%key, %error, "does not decode; the erasure passes over it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::storage::FsStore;

    #[tokio::test]
    async fn forgetting_passes_over_an_object_that_does_not_decode_and_clears_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let values = json!({"computedAt": 1, "profiles": {"prof_a": {"spend": 1}, "prof_b": {"spend": 2}}});
        store.put(keys::TAG_VALUES, shared::storage::gzip(values.to_string().as_bytes()), gz()).await.unwrap();
        store.put("audiences/v1/vip/snapshot.json.gz", b"not gzip".to_vec(), gz()).await.unwrap();
        let diff = json!({"computedAt": 1, "entered": ["prof_a", "prof_b"], "exited": []});
        store
            .put("audiences/v1/vip/diffs/0000000000001.json", diff.to_string().into_bytes(), PutOptions::json())
            .await
            .unwrap();

        let kept = format!("{}checkout/abc.json", keys::ANALYSIS_RESULTS);
        store.put(&kept, br#"{"result": {"rows": [["prof_a"]]}}"#.to_vec(), PutOptions::json()).await.unwrap();

        let forgotten = BTreeSet::from(["prof_a".to_string()]);
        assert_eq!(forget(&store, &forgotten).await.unwrap(), 3, "the values, the diff and the kept result");
        assert!(store.get(&kept).await.unwrap().is_none(), "a saved insight's kept result is dropped");
        let values = store.get(keys::TAG_VALUES).await.unwrap().unwrap().body;
        let values: Value = serde_json::from_slice(&shared::storage::gunzip(&values).unwrap()).unwrap();
        assert_eq!(values["profiles"], json!({"prof_b": {"spend": 2}}));
        let diff = store.get("audiences/v1/vip/diffs/0000000000001.json").await.unwrap().unwrap().body;
        assert_eq!(serde_json::from_slice::<Value>(&diff).unwrap()["entered"], json!(["prof_b"]));
    }
}
