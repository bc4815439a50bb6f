//! The configuration of one run, read once: every file of `config/` that ingest and the full recompute use,
//! checked, with what goes with it (the ready tag versions, the suppression list, the vault). A run loads one
//! snapshot and passes it down, so every part of the run sees the same version of the configuration and no
//! configuration file is read twice. (State the run changes itself, such as `tags/v1/ready.json` during a
//! backfill, is read where it is used.)
//!
//! Ingest is lenient: invalid tag, audience, destination or product files must not stop events from being
//! ingested, so they are reported and wait (a store that cannot be read fails the run, which is retried) ([`Snapshot::tags`], [`Snapshot::activation`]). The full recompute is strict: it
//! checks [`Snapshot::definitions`] and fails naming the file.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use shared::Invalid;
pub use shared::activation::Activation;
use shared::activation::{DestinationDefinition, DestinationSet};
use shared::audiences::{AudienceDefinition, AudienceSet};
use shared::identity::IdentityRules;
use shared::profile::{CleaningRules, ProfileRules};
use shared::storage::keys;
use shared::tags::{Catalog, DefinitionError, ProductConfig, TagDefinition, TagSet};

use crate::Error;
use crate::state::{Settings, Transaction};
use crate::storage::ObjectStore;
use crate::suppression::SuppressionCheck;
use crate::vault::Vault;

/// What a run works with: the configuration, loaded once, and the state's settings.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    /// The configuration (`config/`, the ready tag versions, the suppression list, the vault).
    pub snapshot: Snapshot,
    /// Shard counts, the dedup window, commit attempts and compaction.
    pub state: Settings,
}

impl RunConfig {
    /// The configuration in `store` with the default state settings.
    pub async fn load<S: ObjectStore>(store: &S) -> Result<Self, Error> {
        Ok(Self { snapshot: Snapshot::load(store).await?, state: Settings::default() })
    }

    /// A transaction on `store`'s state with this run's settings and vault.
    pub async fn begin<'s, S: ObjectStore + Clone>(&self, store: &'s S) -> Result<Transaction<'s, S>, Error> {
        Ok(Transaction::begin_sealed(store, self.state.shards, self.snapshot.vault.clone())
            .await?
            .with_compaction(self.state.compaction))
    }
}

/// The configuration of one run.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Identifier types and linking rules (`config/identity.json`, else defaults).
    pub identity: IdentityRules,
    /// Trait policies, aggregated properties and personal traits (`config/profiles.json`, else defaults).
    pub profiles: ProfileRules,
    /// Active tags (`config/tags.json`) when they check, kept up to date incrementally on the profiles a batch
    /// changes; `None` when absent, empty or invalid (reported).
    pub tags: Option<TagSet>,
    /// The tag versions whose incremental state is complete (`tags/v1/ready.json`); the others keep their
    /// previous values until the full recompute backfills them.
    pub ready: BTreeMap<String, u32>,
    /// What partners receive (`config/audiences.json`, `config/destinations.json`), when there are destinations
    /// and everything checks: ingest keeps the real-time audiences' memberships and puts entries, exits,
    /// triggered events and subscribed changes in the delivery outbox.
    pub activation: Option<Activation>,
    /// Identifiers whose events are dropped (`privacy/v1/suppressed.json`).
    pub suppression: Option<SuppressionCheck>,
    /// Seals and opens personal traits (`None` where no data key was ever made).
    pub vault: Option<Arc<Vault>>,
    /// The definitions as read, for the full recompute's strict check.
    pub definitions: Definitions,
}

/// Definition files as read: each parsed, or the problem naming the file.
#[derive(Debug, Clone)]
pub struct Definitions {
    /// `config/tags.json` (none when absent).
    pub tags: Result<Vec<TagDefinition>, Invalid>,
    /// `config/audiences.json` (none when absent).
    pub audiences: Result<Vec<AudienceDefinition>, Invalid>,
    /// `config/destinations.json`: `None` when absent or empty.
    pub destinations: Result<Option<Vec<DestinationDefinition>>, Invalid>,
    /// `config/products.json` (defaults when absent).
    pub products: Result<ProductConfig, Invalid>,
}

impl Default for Definitions {
    fn default() -> Self {
        Self {
            tags: Ok(Vec::new()),
            audiences: Ok(Vec::new()),
            destinations: Ok(None),
            products: Ok(Default::default()),
        }
    }
}

impl Snapshot {
    /// Reads and checks the configuration in `store`. Identity and profile rules that do not parse are an
    /// error (events cannot be applied without them); tag, audience and destination files that do not parse or
    /// check are reported, and what depends on them waits.
    pub async fn load<S: ObjectStore>(store: &S) -> Result<Self, Error> {
        let identity = crate::config::read(store, keys::CONFIG_IDENTITY).await?.unwrap_or_default();
        let mut profiles: ProfileRules = crate::config::read(store, keys::CONFIG_PROFILES).await?.unwrap_or_default();
        if let Err(problem) = profiles.cleaning.check() {
            // Phones without a country code then stay as sent (counted as issues); nothing stops.
            tracing::error!(file = keys::CONFIG_PROFILES, %problem, "the default region is ignored");
            profiles.cleaning.default_region = None;
        }
        let definitions = Definitions {
            tags: lenient(store, keys::CONFIG_TAGS).await?.map(Option::unwrap_or_default),
            audiences: lenient(store, keys::CONFIG_AUDIENCES).await?.map(Option::unwrap_or_default),
            destinations: lenient::<_, Vec<DestinationDefinition>>(store, keys::CONFIG_DESTINATIONS)
                .await?
                .map(|list| list.filter(|l| !l.is_empty())),
            products: lenient(store, keys::CONFIG_PRODUCTS).await?.map(Option::unwrap_or_default),
        };
        let tags = match &definitions.tags {
            Ok(tags) if tags.is_empty() => None,
            Ok(tags) => match TagSet::check(tags, &Catalog::default()) {
                Ok(set) => Some(set),
                Err(errors) => {
                    let problems = problems(&errors);
                    tracing::warn!(%problems, "{} is invalid; tags are not updated", keys::CONFIG_TAGS);
                    None
                }
            },
            Err(problem) => {
                tracing::warn!(%problem, "tags are not updated");
                None
            }
        };
        let ready = match tags {
            Some(_) => ready(store, &profiles.cleaning).await?,
            None => BTreeMap::new(),
        };
        let activation = match lenient_activation(&definitions, tags.as_ref()) {
            Ok(activation) => activation,
            Err(problem) => {
                tracing::warn!(%problem, "deliveries wait until the configuration is fixed");
                None
            }
        };
        let suppression = crate::suppression::load_suppression_check(store).await?;
        let vault = crate::vault::with_rules(store, &profiles).await?;
        Ok(Self { identity, profiles, tags, ready, activation, suppression, vault, definitions })
    }

    /// The tag and audience definitions, each checked: the full recompute's view, strict where ingest is
    /// lenient. A file that does not parse or check is a configuration error naming it.
    pub fn checked(&self) -> Result<Checked, Error> {
        let config = |problem: &Invalid| Error::Config(shared::Error::Config(problem.0.clone()));
        let tag_defs = self.definitions.tags.as_ref().map_err(config)?;
        let audience_defs = self.definitions.audiences.as_ref().map_err(config)?;
        let products = self.definitions.products.as_ref().map_err(config)?.clone();
        let (tags, audiences) = check(tag_defs, audience_defs, &Catalog::default())?;
        Ok(Checked { tags, audiences, audience_defs: audience_defs.clone(), products })
    }

    /// Audiences and destinations for the full recompute, with its checked `audiences`: `Ok(None)` without
    /// destinations, the problem when the destinations do not load or check.
    pub fn activation_with(&self, checked: &Checked) -> Result<Option<Activation>, Invalid> {
        match &self.definitions.destinations {
            Ok(Some(destinations)) => {
                checked_activation(destinations, checked.audiences.clone(), &checked.audience_defs, &checked.tags)
                    .map(Some)
            }
            Ok(None) => Ok(None),
            Err(problem) => Err(problem.clone()),
        }
    }
}

/// Tag and audience definitions that checked ([`Snapshot::checked`]).
#[derive(Debug, Clone)]
pub struct Checked {
    /// Every active tag.
    pub tags: TagSet,
    /// Every audience.
    pub audiences: AudienceSet,
    /// The audiences as defined (names, for payloads).
    pub audience_defs: Vec<AudienceDefinition>,
    /// How product tags are read from events.
    pub products: ProductConfig,
}

/// Checks definitions; all problems in one configuration error naming the file.
pub fn check(
    tags: &[TagDefinition],
    audiences: &[AudienceDefinition],
    catalog: &Catalog,
) -> Result<(TagSet, AudienceSet), Error> {
    let config = |errors: Vec<DefinitionError>, file: &str| {
        Error::Config(shared::Error::Config(format!("{file}: {}", problems(&errors))))
    };
    let tag_set = TagSet::check(tags, catalog).map_err(|e| config(e, keys::CONFIG_TAGS))?;
    let audience_set =
        AudienceSet::check(audiences, &tag_set, catalog).map_err(|e| config(e, keys::CONFIG_AUDIENCES))?;
    Ok((tag_set, audience_set))
}

/// The tag and audience definitions alone (none when a file is absent), for tools that list or check them; a file
/// that does not parse is a configuration error naming it.
pub async fn load_definitions<S: ObjectStore>(
    store: &S,
) -> Result<(Vec<TagDefinition>, Vec<AudienceDefinition>), Error> {
    let tags = crate::config::read(store, keys::CONFIG_TAGS).await?.unwrap_or_default();
    Ok((tags, crate::config::read(store, keys::CONFIG_AUDIENCES).await?.unwrap_or_default()))
}

/// The entry of the ready versions that holds the digest of the cleaning rules the states were built with.
pub const READY_CLEANING: &str = "$cleaning";

/// The ready versions by tag id (none before the first backfill), for the states built with `cleaning`: none
/// when they were built with other cleaning rules (or before the rules were recorded), so that the next full
/// recompute rebuilds every statistical tag's state from the events, cleaned as now, and the values served
/// meanwhile are the previous ones.
pub async fn ready<S: ObjectStore>(store: &S, cleaning: &CleaningRules) -> Result<BTreeMap<String, u32>, Error> {
    let mut stored: BTreeMap<String, u32> = crate::config::read(store, keys::TAGS_READY).await?.unwrap_or_default();
    if stored.remove(READY_CLEANING) != Some(cleaning.fingerprint()) {
        return Ok(BTreeMap::new());
    }
    Ok(stored)
}

/// Ingest's view of the activation: `Ok(None)` without destinations; the problem when a file does not parse or
/// check.
fn lenient_activation(definitions: &Definitions, tags: Option<&TagSet>) -> Result<Option<Activation>, Invalid> {
    let destinations = match &definitions.destinations {
        Ok(Some(destinations)) => destinations,
        Ok(None) => return Ok(None),
        Err(problem) => return Err(problem.clone()),
    };
    let audience_defs = definitions.audiences.as_ref().map_err(Clone::clone)?;
    let catalog = Catalog::default();
    let empty;
    let tags = match tags {
        Some(tags) => tags,
        None => {
            empty = TagSet::check(&[], &catalog).map_err(|e| Invalid(format!("no tags do not check: {e:?}")))?;
            &empty
        }
    };
    let audiences = AudienceSet::check(audience_defs, tags, &catalog)
        .map_err(|errors| Invalid(format!("{}: {}", keys::CONFIG_AUDIENCES, problems(&errors))))?;
    checked_activation(destinations, audiences, audience_defs, tags).map(Some)
}

/// Audiences and destinations checked together.
fn checked_activation(
    destinations: &[DestinationDefinition],
    audiences: AudienceSet,
    audience_defs: &[AudienceDefinition],
    tags: &TagSet,
) -> Result<Activation, Invalid> {
    // Producers accept loopback URLs: whether a URL may be reached is decided when sending.
    let destinations = DestinationSet::check(destinations, &audiences, tags, &Catalog::default(), true)
        .map_err(|errors| Invalid(format!("{}: {}", keys::CONFIG_DESTINATIONS, problems(&errors))))?;
    let names = audience_defs.iter().map(|a| (a.id.clone(), a.name.clone())).collect();
    Ok(Activation { audiences, names, destinations })
}

/// `key` decoded (`None` when absent), or the problem naming the file when it does not parse; a store failure is
/// an error.
async fn lenient<S: ObjectStore, T: DeserializeOwned>(
    store: &S,
    key: &str,
) -> Result<Result<Option<T>, Invalid>, Error> {
    match crate::config::read(store, key).await {
        Ok(value) => Ok(Ok(value)),
        Err(Error::Config(problem)) => Ok(Err(Invalid(problem.to_string()))),
        Err(error) => Err(error),
    }
}

fn problems(errors: &[DefinitionError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests;
