//! The definitions in `config/` (tags, audiences, destinations), changed one at a time by the API and by `cdp`
//! alike: each change is checked against the whole configuration (an audience naming a missing tag, a
//! destination naming a missing audience, a bad webhook URL are refused with every problem named), written
//! under compare-and-swap (two editors at once both succeed, neither loses the other's change), and recorded
//! in the audit log with before and after. The pipeline picks it up on its next run.
//!
//! Destination secrets are write-only: they are kept in `secrets/v1/destinations.json`, never in the
//! definitions, listings or the audit log. A definition sent without `secret` keeps the stored one; a new
//! `secret` rotates: the old one keeps signing beside it for 24 hours unless `previousSecrets` is given.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shared::access::Actor;
use shared::activation::{DestinationDefinition, DestinationSet};
use shared::audiences::{AudienceDefinition, AudienceSet};
use shared::storage::keys::{self, CONFIG_DESTINATIONS};
use shared::tags::{Catalog, DefinitionError, TagDefinition, TagSet};

use crate::Error;
use crate::audit::Change;
use crate::storage::ObjectStore;

/// Why a change was not made.
#[derive(Debug)]
pub enum Refused {
    /// The change does not parse or check (every problem named): the caller's to fix.
    Invalid(String),
    /// No such definition.
    NotFound(String),
    /// Others still use what the change removes.
    InUse(String),
    /// A create found a definition with the id already.
    Exists(String),
    /// Storage failed or what is stored does not read: not the change's fault.
    Failed(Error),
}

impl From<Error> for Refused {
    fn from(error: Error) -> Self {
        Refused::Failed(error)
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Invalid(problem) | Refused::NotFound(problem) | Refused::Exists(problem) => f.write_str(problem),
            Refused::InUse(problem) => write!(f, "still in use: {problem}"),
            Refused::Failed(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for Refused {}

/// Where a change is checked: whether webhook URLs on loopback are allowed (`cdp up`, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Checking {
    /// Allow `http://127.0.0.1…` destinations.
    pub loopback: bool,
    /// Refuse to replace a definition with the same id ([`Refused::Exists`]): a create, not an update.
    pub create_only: bool,
}

/// A definition written by [`put`].
#[derive(Debug, Clone)]
pub struct Put {
    /// The definition stored before, if any (secrets removed).
    pub before: Option<Value>,
    /// The definition as stored now (secrets removed).
    pub after: Value,
}

/// Creates or replaces the definition `id` of `kind` with `definition` (a JSON object; its `id`, if given, must
/// be `id`) on behalf of `actor`: a destination's secrets first (so no definition is ever without its secret),
/// then the file under compare-and-swap with the whole configuration checked, then the audit record.
pub async fn put<S: ObjectStore>(
    store: &S,
    kind: Kind,
    id: &str,
    mut definition: Value,
    actor: Actor,
    checking: Checking,
) -> Result<Put, Refused> {
    let Some(object) = definition.as_object_mut() else {
        return Err(Refused::Invalid(format!("a {} definition is a JSON object", kind.noun())));
    };
    match object.get("id") {
        None => {
            object.insert("id".into(), Value::String(id.to_string()));
        }
        Some(Value::String(given)) if given == id => {}
        Some(given) => return Err(Refused::Invalid(format!("id: {given} differs from the path's {id:?}"))),
    }
    let taken = || Refused::Exists(format!("{} {id:?} exists", kind.noun()));
    let mut others = Definitions::load(store).await?;
    // The names the definition reads are checked against the data dictionary (the others' are not: data that
    // stopped coming must not block an unrelated change).
    // A dictionary that cannot be read checks nothing rather than stopping every change.
    let catalog = match crate::catalog::load(store).await {
        Ok(dictionary) => dictionary.catalog(),
        Err(error) => {
            tracing::warn!(%error, "the data dictionary cannot be read; definitions are checked without it");
            Catalog::default()
        }
    };
    // Checked again under compare-and-swap below; here, so that a refused create rotates no secret.
    if checking.create_only && others.of(kind).iter().any(|d| id_of(d) == Some(id)) {
        return Err(taken());
    }
    let now = crate::config::now()?;
    let rotated = match kind {
        Kind::Destinations => store_secrets(store, id, object, now.unix_millis()).await?,
        _ => false,
    };
    let (before, after) = crate::config::update(store, kind.file(), "application/json", |bytes| {
        let mut all = others.with(kind, bytes)?;
        let list = all.of(kind);
        let position = list.iter().position(|d| id_of(d) == Some(id));
        if checking.create_only && position.is_some() {
            return Err(taken());
        }
        let before = position.map(|i| list[i].clone());
        let mut next = definition.clone();
        if let Some(before) = &before {
            carry_over(kind, before, &mut next);
        }
        let index = match position {
            Some(i) => {
                list[i] = next.clone();
                i
            }
            None => {
                list.push(next.clone());
                list.len() - 1
            }
        };
        all.check(checking.loopback).map_err(Refused::Invalid)?;
        all.check_names(kind, index, checking.loopback, &catalog).map_err(Refused::Invalid)?;
        if kind == Kind::Destinations {
            // Definitions written before secrets were kept apart lose theirs here (store_secrets moved them).
            for definition in all.of(kind).iter_mut() {
                strip_secrets(definition);
            }
        }
        let bytes = serde_json::to_vec_pretty(all.of(kind)).map_err(Error::encoding)?;
        Ok::<_, Refused>((bytes, (before, next)))
    })
    .await?;
    let action = format!("{}.{}", kind.noun(), if before.is_some() { "update" } else { "create" });
    let detail = rotated.then(|| json!({"secretRotated": true}));
    let (before, after) = (before.as_ref().map(|b| shown(kind, b)), shown(kind, &after));
    let change = Change { before: before.clone(), after: Some(after.clone()), detail };
    crate::audit::record(store, actor, &action, &format!("{}:{id}", kind.noun()), change).await?;
    Ok(Put { before, after })
}

/// Deletes the definition `id` of `kind` on behalf of `actor`, unless others still use it; returns it as it was
/// (secrets removed).
pub async fn delete<S: ObjectStore>(
    store: &S,
    kind: Kind,
    id: &str,
    actor: Actor,
    checking: Checking,
) -> Result<Value, Refused> {
    let others = Definitions::load(store).await?;
    let before = crate::config::update(store, kind.file(), "application/json", |bytes| {
        let mut all = others.with(kind, bytes)?;
        let list = all.of(kind);
        let Some(position) = list.iter().position(|d| id_of(d) == Some(id)) else {
            return Err(Refused::NotFound(format!("no {} {id:?}", kind.noun())));
        };
        let before = list.remove(position);
        all.check(checking.loopback).map_err(Refused::InUse)?;
        let bytes = serde_json::to_vec_pretty(all.of(kind)).map_err(Error::encoding)?;
        Ok::<_, Refused>((bytes, before))
    })
    .await?;
    if kind == Kind::Destinations {
        crate::activation::secrets::update_secrets(store, |stored| {
            stored.0.remove(id);
            Ok::<_, Error>(())
        })
        .await?;
    }
    let before = shown(kind, &before);
    let change = Change { before: Some(before.clone()), after: None, detail: None };
    crate::audit::record(store, actor, &format!("{}.delete", kind.noun()), &format!("{}:{id}", kind.noun()), change)
        .await?;
    Ok(before)
}

/// How long a rotated-out destination secret keeps signing.
const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;

/// One kind of definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `config/tags.json`.
    Tags,
    /// `config/audiences.json`.
    Audiences,
    /// `config/destinations.json` (their secrets in `secrets/v1/destinations.json`).
    Destinations,
}

impl Kind {
    /// Its file in `config/`.
    pub fn file(self) -> &'static str {
        match self {
            Kind::Tags => keys::CONFIG_TAGS,
            Kind::Audiences => keys::CONFIG_AUDIENCES,
            Kind::Destinations => keys::CONFIG_DESTINATIONS,
        }
    }

    /// One of it, in messages and audit actions (`tag`).
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Tags => "tag",
            Kind::Audiences => "audience",
            Kind::Destinations => "destination",
        }
    }

    /// Its API path and listing field (`tags`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Tags => "tags",
            Kind::Audiences => "audiences",
            Kind::Destinations => "destinations",
        }
    }
}

/// The three definition files, as JSON arrays.
#[derive(Debug, Clone, Default)]
pub struct Definitions {
    tags: Vec<Value>,
    audiences: Vec<Value>,
    destinations: Vec<Value>,
}

impl Definitions {
    /// The three files as stored (empty arrays when absent).
    pub async fn load<S: ObjectStore>(store: &S) -> Result<Self, Error> {
        Ok(Self {
            tags: read_array(store, keys::CONFIG_TAGS).await?,
            audiences: read_array(store, keys::CONFIG_AUDIENCES).await?,
            destinations: read_array(store, keys::CONFIG_DESTINATIONS).await?,
        })
    }

    /// These definitions with `kind`'s file as `bytes` (as read for a compare-and-swap; none when absent).
    fn with(&self, kind: Kind, bytes: Option<&[u8]>) -> Result<Self, Error> {
        let mut all = self.clone();
        *all.of(kind) = match bytes {
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| Error::Config(shared::Error::Config(format!("{}: {e}", kind.file()))))?,
            None => Vec::new(),
        };
        Ok(all)
    }

    /// The definitions of `kind`.
    pub fn of(&mut self, kind: Kind) -> &mut Vec<Value> {
        match kind {
            Kind::Tags => &mut self.tags,
            Kind::Audiences => &mut self.audiences,
            Kind::Destinations => &mut self.destinations,
        }
    }

    /// Checks the whole configuration as the pipeline will read it; every problem in one message.
    fn check(&self, loopback: bool) -> Result<(), String> {
        let tags: Vec<TagDefinition> = typed(&self.tags, keys::CONFIG_TAGS)?;
        let audiences: Vec<AudienceDefinition> = typed(&self.audiences, keys::CONFIG_AUDIENCES)?;
        let destinations: Vec<DestinationDefinition> = typed(&self.destinations, keys::CONFIG_DESTINATIONS)?;
        let catalog = Catalog::default();
        let (tag_set, audience_set) = crate::snapshot::check(&tags, &audiences, &catalog).map_err(|e| match e {
            Error::Config(problem) => problem.to_string(),
            other => other.to_string(),
        })?;
        DestinationSet::check(&destinations, &audience_set, &tag_set, &catalog, loopback).map_err(|errors| {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!("{CONFIG_DESTINATIONS}: {}", list.join("; "))
        })?;
        Ok(())
    }
}

impl Definitions {
    /// Checks the names the definition at `index` of `kind` reads (events, properties, traits) against
    /// `catalog`: an unknown one is refused with the closest known name, unless the definition expects it.
    /// The configuration must already pass [`Definitions::check`].
    fn check_names(&self, kind: Kind, index: usize, loopback: bool, catalog: &Catalog) -> Result<(), String> {
        if catalog.is_empty() {
            return Ok(());
        }
        let tags: Vec<TagDefinition> = typed(&self.tags, keys::CONFIG_TAGS)?;
        let audiences: Vec<AudienceDefinition> = typed(&self.audiences, keys::CONFIG_AUDIENCES)?;
        let destinations: Vec<DestinationDefinition> = typed(&self.destinations, keys::CONFIG_DESTINATIONS)?;
        let unchecked =
            |errors: Vec<DefinitionError>| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
        let none = Catalog::default();
        let tag_set = TagSet::check(&tags, &none).map_err(unchecked)?;
        let audience_set = AudienceSet::check(&audiences, &tag_set, &none).map_err(unchecked)?;
        let errors = match kind {
            Kind::Tags => TagSet::check(&tags, catalog).err(),
            Kind::Audiences => AudienceSet::check(&audiences, &tag_set, catalog).err(),
            Kind::Destinations => {
                DestinationSet::check(&destinations, &audience_set, &tag_set, catalog, loopback).err()
            }
        };
        let prefix = format!("{}[{index}] (", kind.plural());
        let mine: Vec<String> = errors
            .unwrap_or_default()
            .iter()
            .filter(|e| e.path.starts_with(&prefix))
            .map(ToString::to_string)
            .collect();
        match mine.is_empty() {
            true => Ok(()),
            false => Err(format!("{}: {}", kind.file(), mine.join("; "))),
        }
    }
}

/// The definitions of one array, typed, or the problem naming the entry.
fn typed<T: DeserializeOwned>(values: &[Value], file: &str) -> Result<Vec<T>, String> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let id = v.get("id").and_then(Value::as_str).unwrap_or("?");
            serde_json::from_value(v.clone()).map_err(|e| format!("{file}[{i}] ({id}): {e}"))
        })
        .collect()
}

/// The JSON array at `key` (empty when absent).
pub async fn read_array<S: ObjectStore>(store: &S, key: &str) -> Result<Vec<Value>, Error> {
    Ok(crate::config::read::<_, Vec<Value>>(store, key).await?.unwrap_or_default())
}

/// A definition's id.
pub fn id_of(value: &Value) -> Option<&str> {
    value.get("id").and_then(Value::as_str)
}

/// What listings and the audit log show of a definition: destinations without their secrets.
pub fn shown(kind: Kind, definition: &Value) -> Value {
    let mut definition = definition.clone();
    if kind == Kind::Destinations
        && let Some(object) = definition.as_object_mut()
    {
        object.remove("secret");
        if let Some(Value::Array(previous)) = object.get_mut("previousSecrets") {
            for entry in previous {
                if let Some(entry) = entry.as_object_mut() {
                    entry.remove("secret");
                }
            }
        }
    }
    definition
}

/// Takes the secrets out of a destination definition `object` and stores them in
/// `secrets/v1/destinations.json`, with those other definitions still hold inline (written before secrets were
/// kept apart). Without a new secret the stored one stays; a new one rotates: the old keeps signing beside it
/// for a day (unless `previousSecrets` is given). A new destination needs a secret. Returns whether it
/// rotated.
async fn store_secrets<S: ObjectStore>(
    store: &S,
    id: &str,
    object: &mut serde_json::Map<String, Value>,
    now_ms: i64,
) -> Result<bool, Refused> {
    let parse = |field: &str, value: Value| -> Result<Value, Refused> {
        match field {
            "secret" => serde_json::from_value::<shared::activation::Secret>(value.clone()).map(|_| value),
            _ => serde_json::from_value::<Vec<shared::activation::PreviousSecret>>(value.clone()).map(|_| value),
        }
        .map_err(|e| Refused::Invalid(format!("{field}: {e}")))
    };
    let secret = object.remove("secret").map(|v| parse("secret", v)).transpose()?;
    let previous = object.remove("previousSecrets").map(|v| parse("previousSecrets", v)).transpose()?;
    let inline: Vec<DestinationDefinition> =
        crate::config::read(store, keys::CONFIG_DESTINATIONS).await?.unwrap_or_default();
    crate::activation::secrets::update_secrets(store, |stored| {
        let mut moved = shared::activation::DestinationSecrets::default();
        crate::activation::secrets::take_inline(&mut inline.clone(), &mut moved);
        for (other, entry) in moved.0 {
            stored.0.entry(other).or_insert(entry);
        }
        let current = stored.0.get(id).cloned();
        let (entry, rotated) = match (&secret, current) {
            (None, None) => {
                return Err(Refused::Invalid("secret: a new destination needs a signing secret (whsec_…)".into()));
            }
            (None, Some(mut entry)) => {
                if let Some(previous) = &previous {
                    entry.previous_secrets = from_json(previous)?;
                }
                (entry, false)
            }
            (Some(new), current) => {
                let new: shared::activation::Secret = from_json(new)?;
                let (previous, rotated) = match (&previous, current) {
                    (Some(given), _) => (from_json(given)?, false),
                    (None, Some(old)) if old.secret != new => {
                        let mut kept: Vec<_> = old.previous_secrets.into_iter().filter(|p| p.until > now_ms).collect();
                        kept.push(shared::activation::PreviousSecret {
                            secret: old.secret,
                            until: now_ms + ROTATION_OVERLAP_MS,
                        });
                        (kept, true)
                    }
                    (None, Some(old)) => (old.previous_secrets, false),
                    (None, None) => (Vec::new(), false),
                };
                (shared::activation::SecretEntry { secret: new, previous_secrets: previous }, rotated)
            }
        };
        stored.0.insert(id.to_string(), entry);
        Ok(rotated)
    })
    .await
}

fn from_json<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, Refused> {
    serde_json::from_value(value.clone()).map_err(|e| Refused::Invalid(e.to_string()))
}

/// A destination definition (JSON) without secrets.
fn strip_secrets(definition: &mut Value) {
    if let Some(object) = definition.as_object_mut() {
        object.remove("secret");
        object.remove("previousSecrets");
    }
}

/// What a new version of a definition keeps from the stored one: a tag whose computation changed gets the next
/// version (so it is backfilled while the old keeps serving). (A destination's secrets: `store_secrets`.)
fn carry_over(kind: Kind, before: &Value, next: &mut Value) {
    let Some(next) = next.as_object_mut() else { return };
    match kind {
        Kind::Tags => {
            let computation = |v: &Value| {
                let mut v = v.as_object().cloned().unwrap_or_default();
                for meta in ["name", "description", "owner", "version", "status"] {
                    v.remove(meta);
                }
                v
            };
            let old_version = before.get("version").and_then(Value::as_u64).unwrap_or(1);
            let new_version = next.get("version").and_then(Value::as_u64).unwrap_or(old_version);
            let changed = computation(before) != computation(&Value::Object(next.clone()));
            let version = if changed && new_version <= old_version { old_version + 1 } else { new_version };
            next.insert("version".into(), json!(version));
        }
        // A destination's secrets are in their own file (`store_secrets`).
        Kind::Destinations | Kind::Audiences => {}
    }
}
