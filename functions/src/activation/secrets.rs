//! The destinations' signing secrets, kept apart from their definitions (`secrets/v1/destinations.json`,
//! `shared::activation::DESTINATION_SECRETS`): only what signs or verifies (the dispatcher, partners'
//! feedback, `cdp up`'s demo partner) reads them, through [`load_destinations`]; what writes definitions (the
//! API, `cdp destination add`) writes the secrets here and the rest to `config/destinations.json`.

use shared::activation::{DESTINATION_SECRETS, DestinationDefinition, DestinationSecrets, SecretEntry};
use shared::storage::keys;

use crate::Error;
use crate::storage::ObjectStore;

/// The stored secrets (none when the file is absent).
pub async fn load_secrets<S: ObjectStore>(store: &S) -> Result<DestinationSecrets, Error> {
    Ok(crate::config::read(store, DESTINATION_SECRETS).await?.unwrap_or_default())
}

/// The destinations as configured, each with its secrets: for signing and verifying only.
pub async fn load_destinations<S: ObjectStore>(store: &S) -> Result<Vec<DestinationDefinition>, Error> {
    let mut destinations: Vec<DestinationDefinition> =
        crate::config::read(store, keys::CONFIG_DESTINATIONS).await?.unwrap_or_default();
    load_secrets(store).await?.apply(&mut destinations);
    Ok(destinations)
}

/// Changes the secrets under compare-and-swap (`change` runs again on the newer file when another writer
/// won).
pub async fn update_secrets<S: ObjectStore, R, E: From<Error>>(
    store: &S,
    mut change: impl FnMut(&mut DestinationSecrets) -> Result<R, E>,
) -> Result<R, E> {
    crate::config::update(store, DESTINATION_SECRETS, "application/json", |bytes| {
        let mut secrets: DestinationSecrets = match bytes {
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| Error::Config(shared::Error::Config(format!("{DESTINATION_SECRETS}: {e}"))))?,
            None => DestinationSecrets::default(),
        };
        let result = change(&mut secrets)?;
        let body = serde_json::to_vec_pretty(&secrets).map_err(Error::encoding)?;
        Ok((body, result))
    })
    .await
}

/// Moves every secret a definition still holds inline into `secrets` (unless one is stored there already) and
/// takes it out of the definition: what a writer does before storing the definitions.
pub fn take_inline(definitions: &mut [DestinationDefinition], secrets: &mut DestinationSecrets) {
    for definition in definitions {
        let previous = std::mem::take(&mut definition.previous_secrets);
        if let Some(secret) = definition.secret.take() {
            secrets.0.entry(definition.id.clone()).or_insert(SecretEntry { secret, previous_secrets: previous });
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn inline_secrets_move_out_and_come_back_for_signing_only() {
        let mut definitions: Vec<DestinationDefinition> = serde_json::from_value(json!([
            {"id": "crm", "url": "https://p.example/h", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
             "send": {"events": [{"events": ["x"]}]}},
            {"id": "ads", "url": "https://q.example/h", "send": {"events": [{"events": ["x"]}]}}
        ]))
        .unwrap();
        let mut secrets = DestinationSecrets::default();
        take_inline(&mut definitions, &mut secrets);
        assert!(definitions.iter().all(|d| d.secret.is_none()));
        assert!(!serde_json::to_string(&definitions).unwrap().contains("whsec_"), "the definitions hold no secret");
        assert_eq!(secrets.0.len(), 1);
        secrets.apply(&mut definitions);
        assert!(definitions[0].secret.is_some() && definitions[1].secret.is_none());
    }
}
