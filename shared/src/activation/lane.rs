//! Delivery lanes: the order-keeping unit of a destination. A profile always maps to the same lane; a lane
//! sends one request at a time, so a profile's items arrive in order, and a lane waiting on a retry holds back
//! only its own profiles (the destination's other lanes go on). The state is plain data, stored between runs.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::destination::Batching;
use super::payload::{self, Item};
use super::retry::Verdict;
use crate::time::UtcTime;

/// Lanes per destination: up to this many requests in flight to one partner.
pub const LANES: usize = 8;
/// Delivered item ids a lane remembers, so a message enqueued twice (a producer retried) is sent once.
pub const RECENT_IDS: usize = 1024;

/// One item for one destination, as producers enqueue it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// The destination.
    pub destination: String,
    /// The item (its id is the message's id).
    pub item: Item,
    /// When it was enqueued (ms).
    pub enqueued_at: i64,
    /// The identity key the delivery's outcome event is tied to (see [`super::feedback::subject_of`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl Message {
    /// The lane of this message's profile.
    pub fn lane(&self) -> usize {
        lane_of(&self.item.profile.id)
    }
}

/// The lane of a profile (FNV-1a of its id).
pub fn lane_of(profile: &str) -> usize {
    let hash = profile.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (hash % LANES as u64) as usize
}

/// A formed request: its body is fixed at formation, so every attempt sends the same bytes under the same
/// `webhook-id` (the partner's idempotency key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    /// `webhook-id`.
    pub webhook_id: String,
    /// The items' ids, in order.
    pub item_ids: Vec<String>,
    /// Each item's subject (the identity key its outcome event is tied to; empty when none).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// The exact body (JSON text).
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (ms).
    pub due_at: i64,
    /// When it was formed (ms).
    pub formed_at: i64,
    /// The oldest item's enqueue time (ms), for latency.
    pub oldest_enqueued_at: i64,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A lane's state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lane {
    /// Messages not yet in a request, oldest first.
    #[serde(default)]
    pub pending: VecDeque<Message>,
    /// The request being attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<InFlight>,
    /// Ids of recently delivered (or dead-lettered) items.
    #[serde(default)]
    pub recent: VecDeque<String>,
    /// Dead letters an operator asked to send again: sent (same `webhook-id`, same bytes) before new requests.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub replays: VecDeque<InFlight>,
}

/// How an attempt ended for the lane.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// Delivered.
    Delivered(InFlight),
    /// Another attempt is scheduled (the lane keeps the request).
    Retrying {
        /// When (ms).
        at: i64,
    },
    /// Given up: keep it as a dead letter.
    Dead(InFlight, String),
    /// The partner said gone (410): the request is a dead letter and the destination is to be disabled.
    Disabled(InFlight),
}

impl InFlight {
    /// This request without the items about `profiles` (an erased person), or `None` when nothing else is
    /// left. The rest keep their order, ids and `webhook-id`; the body is re-serialized without them.
    /// Deletion notices (`profile.deleted`) are kept: they exist to tell the partner.
    pub fn without(&self, profiles: &BTreeSet<String>) -> Option<InFlight> {
        let Ok(mut body) = serde_json::from_str::<Value>(&self.body) else { return Some(self.clone()) };
        let Some(items) = body.pointer_mut("/data/items").and_then(Value::as_array_mut) else {
            return Some(self.clone());
        };
        let keep: Vec<bool> = items.iter().map(|item| !about(item, profiles)).collect();
        if keep.iter().all(|k| *k) {
            return Some(self.clone());
        }
        let mut index = 0;
        items.retain(|_| {
            index += 1;
            keep[index - 1]
        });
        if items.is_empty() {
            return None;
        }
        let pick = |list: &[String]| -> Vec<String> {
            list.iter().zip(&keep).filter(|(_, k)| **k).map(|(v, _)| v.clone()).collect()
        };
        Some(InFlight {
            item_ids: pick(&self.item_ids),
            subjects: if self.subjects.len() == keep.len() { pick(&self.subjects) } else { Vec::new() },
            body: body.to_string(),
            ..self.clone()
        })
    }
}

/// Whether an item (as JSON) is about one of `profiles`, and is not the deletion notice itself.
fn about(item: &Value, profiles: &BTreeSet<String>) -> bool {
    item.pointer("/profile/id").and_then(Value::as_str).is_some_and(|id| profiles.contains(id))
        && item.get("type").and_then(Value::as_str) != Some("profile.deleted")
}

impl Lane {
    /// Drops everything about `profiles` (an erased person): pending messages, their items in the request in
    /// flight and in queued replays. Deletion notices stay. Returns how many items were dropped.
    pub fn forget(&mut self, profiles: &BTreeSet<String>) -> usize {
        let before = self.items();
        self.pending.retain(|m| {
            !profiles.contains(&m.item.profile.id) || matches!(m.item.detail, payload::Detail::ProfileDeleted {})
        });
        self.current = self.current.take().and_then(|c| c.without(profiles));
        self.replays = std::mem::take(&mut self.replays).into_iter().filter_map(|r| r.without(profiles)).collect();
        before - self.items()
    }

    fn items(&self) -> usize {
        self.pending.len()
            + self.current.as_ref().map_or(0, |c| c.item_ids.len())
            + self.replays.iter().map(|r| r.item_ids.len()).sum::<usize>()
    }

    /// Whether the lane holds nothing.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && self.current.is_none() && self.replays.is_empty()
    }

    /// Queues a dead letter to be sent again, with a fresh attempt count, as soon as the lane is free.
    pub fn replay(&mut self, mut request: InFlight, now: i64) {
        request.attempts = 0;
        request.due_at = now;
        request.last_error = None;
        self.replays.push_back(request);
    }

    /// Adds a message; `false` (and nothing changes) when its item is already queued, in flight or recently
    /// delivered.
    pub fn push(&mut self, message: Message) -> bool {
        let id = &message.item.id;
        let known = self.pending.iter().any(|m| &m.item.id == id)
            || self.current.as_ref().is_some_and(|c| c.item_ids.contains(id))
            || self.recent.contains(id);
        if !known {
            self.pending.push_back(message);
        }
        !known
    }

    /// When the lane next has something to do (ms): the in-flight request's due time, or when the pending
    /// messages make a request (full, or the oldest has waited `maxWaitMs`); `None` when idle.
    pub fn due(&self, batching: &Batching) -> Option<i64> {
        if let Some(current) = &self.current {
            return Some(current.due_at);
        }
        if let Some(replay) = self.replays.front() {
            return Some(replay.due_at);
        }
        let oldest = self.pending.front()?;
        if self.pending.len() >= batching.max_events {
            return Some(oldest.enqueued_at);
        }
        Some(oldest.enqueued_at.saturating_add(batching.max_wait_ms as i64))
    }

    /// The request to attempt at `now`, forming one from the pending messages when due. `None` when nothing
    /// is due yet.
    pub fn next(&mut self, destination: &str, batching: &Batching, now: UtcTime) -> Option<&InFlight> {
        let now_ms = now.unix_millis();
        if self.current.is_none() {
            self.current = self.replays.pop_front();
        }
        if self.current.is_none() && self.due(batching).is_some_and(|due| due <= now_ms) {
            let mut items: Vec<Item> = Vec::new();
            let mut subjects: Vec<String> = Vec::new();
            let mut bytes = 200;
            let mut oldest = i64::MAX;
            while let Some(message) = self.pending.front() {
                let size = serde_json::to_vec(&message.item).map_or(0, |b| b.len()) + 1;
                if !items.is_empty() && (items.len() >= batching.max_events || bytes + size > batching.max_bytes) {
                    break;
                }
                bytes += size;
                let Some(message) = self.pending.pop_front() else { break };
                oldest = oldest.min(message.enqueued_at);
                subjects.push(message.subject.unwrap_or_default());
                items.push(message.item);
            }
            let item_ids: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
            let webhook_id = format!("msg_{}", &crate::ids::sha256_hex(&item_ids.join("\n"))[..32]);
            let body = String::from_utf8(payload::body(destination, items, now))
                .unwrap_or_else(|_| unreachable!("serde_json writes UTF-8"));
            self.current = Some(InFlight {
                webhook_id,
                item_ids,
                subjects,
                body,
                attempts: 0,
                due_at: now_ms,
                formed_at: now_ms,
                oldest_enqueued_at: oldest,
                last_error: None,
            });
        }
        self.current.as_ref().filter(|c| c.due_at <= now_ms)
    }

    /// Records the verdict on the in-flight request's attempt made at `now` (ms).
    pub fn settle(&mut self, verdict: Verdict, error: Option<String>, now: i64) -> Option<Settled> {
        let mut current = self.current.take()?;
        current.attempts += 1;
        current.last_error = error;
        let done = |lane: &mut Lane, current: &InFlight| {
            for id in &current.item_ids {
                lane.recent.push_back(id.clone());
            }
            while lane.recent.len() > RECENT_IDS {
                lane.recent.pop_front();
            }
        };
        Some(match verdict {
            Verdict::Delivered => {
                done(self, &current);
                Settled::Delivered(current)
            }
            Verdict::RetryIn(ms) => {
                current.due_at = now.saturating_add(ms as i64);
                let at = current.due_at;
                self.current = Some(current);
                Settled::Retrying { at }
            }
            Verdict::DeadLetter(reason) => {
                done(self, &current);
                Settled::Dead(current, reason)
            }
            Verdict::Disable => {
                done(self, &current);
                Settled::Disabled(current)
            }
        })
    }
}
