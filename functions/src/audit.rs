//! The audit log's writer: one create-only object per operation (`audit/v1/dt=YYYY-MM-DD/<ulid>.json`,
//! `shared::access::audit_key`), never rewritten. Used by the API, by `cdp` commands that change the platform,
//! and by privacy processing; read through the API (`GET /v1/audit`).

use serde_json::Value;
use shared::access::{Actor, AuditRecord, audit_key};
use shared::ids::Entropy;

use crate::Error;
use crate::storage::{ObjectStore, PutOptions, StoreError};

/// What a recorded operation changed.
#[derive(Debug, Default)]
pub struct Change {
    /// Configuration before (secrets redacted).
    pub before: Option<Value>,
    /// Configuration after (secrets redacted).
    pub after: Option<Value>,
    /// Anything else worth keeping (hashed identifiers, counts).
    pub detail: Option<Value>,
}

/// Appends one record to the audit log; used by the API and by `cdp` commands that change the platform.
pub async fn record<S: ObjectStore>(
    store: &S,
    actor: Actor,
    action: &str,
    target: &str,
    change: Change,
) -> Result<AuditRecord, Error> {
    let at = crate::config::now()?;
    let mut entropy = Entropy::from_seed(crate::config::random_seed()?);
    for _ in 0..3 {
        let id = next_record_id(entropy.ulid(at)).to_string();
        let entry = AuditRecord {
            id: id.clone(),
            at,
            actor: actor.clone(),
            action: action.to_string(),
            target: target.to_string(),
            before: change.before.clone(),
            after: change.after.clone(),
            detail: change.detail.clone(),
        };
        let body = serde_json::to_vec(&entry).map_err(Error::encoding)?;
        match store
            .put(
                &audit_key(at, &id),
                body,
                PutOptions { condition: crate::storage::Condition::IfNoneMatch, ..PutOptions::json() },
            )
            .await
        {
            Ok(_) => return Ok(entry),
            Err(StoreError::PreconditionFailed) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Internal("could not name a new audit record".into()))
}

/// `candidate`, or the next id after the last one this process gave if that is not later: records made in
/// the same millisecond keep their order in the log.
fn next_record_id(candidate: ulid::Ulid) -> ulid::Ulid {
    static LAST: std::sync::Mutex<u128> = std::sync::Mutex::new(0);
    let mut last = LAST.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let id = u128::from(candidate).max(last.saturating_add(1));
    *last = id;
    ulid::Ulid::from(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_record_ids_keep_their_order_within_a_millisecond() {
        let candidate = ulid::Ulid::from_parts(1_795_953_600_000, 5);
        let ids: Vec<ulid::Ulid> = (0..3).map(|_| next_record_id(candidate)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let earlier = next_record_id(ulid::Ulid::from_parts(1_795_953_600_000, 0));
        assert!(earlier > ids[2], "an earlier candidate comes after");
    }
}
