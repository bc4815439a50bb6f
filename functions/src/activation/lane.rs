//! One lane's task: it sends the lane's requests in order, signed, each attempt with its deadline, and
//! retries on the destination's schedule until delivered or dead-lettered.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use shared::activation::lane::{Lane, Settled};
use shared::activation::{DestinationDefinition, Outcome, Verdict};
use tokio::sync::mpsc;

use super::http::Attempt;
use crate::activation::AttemptRecord;
use crate::activation::DeadLetter;
use crate::activation::engine::Command;
use crate::activation::engine::PERSIST_EVERY;
use crate::activation::engine::Shared;
use crate::activation::engine::now_ms;
use crate::activation::records::describe;
use crate::activation::records::outcomes;
use crate::activation::records::store_dead;
use crate::activation::stored::Disabled;
use crate::activation::stored::persist;
use crate::activation::stored::status_key;
use crate::storage::{ObjectStore, PutOptions};

pub(super) async fn lane_task<S: ObjectStore + Clone>(
    shared: Arc<Shared<S>>,
    destination: DestinationDefinition,
    lane_no: usize,
    mut lane: Lane,
    mut commands: mpsc::UnboundedReceiver<Command>,
    drain_until: Option<i64>,
) {
    let disabled = shared.disabled.get(&destination.id).cloned().unwrap_or_default();
    // Closed by `Dispatcher::stop`: without a deadline the task stops; with one it finishes what is due first.
    let mut closed = false;
    let mut stored_at = tokio::time::Instant::now();
    let mut dirty = false;
    loop {
        let now = now_ms();
        let off = disabled.load(Ordering::Relaxed);
        let due = if off { None } else { lane.due(&destination.batching) };
        // In drain mode an attempt that could outlast the deadline is left for the next run.
        let fits = drain_until.is_none_or(|deadline| now + destination.timeout_ms as i64 <= deadline);
        if due.is_some_and(|at| at <= now) && fits {
            attempt(&shared, &destination, lane_no, &mut lane, &disabled).await;
            // After a delivery the lane is stored at most once a second (and when it stops): a crash repeats at
            // most that second's deliveries (same webhook-ids and item ids), never loses one. A request that
            // failed is stored at once, with its attempts and next time.
            let failing = lane.current.as_ref().is_some_and(|c| c.attempts > 0);
            dirty = true;
            if failing || stored_at.elapsed() >= PERSIST_EVERY {
                if let Err(error) = persist(&shared.store, &destination.id, lane_no, &lane).await {
                    tracing::error!(destination = %destination.id, lane = lane_no, "could not store the lane: {error}");
                }
                (stored_at, dirty) = (tokio::time::Instant::now(), false);
            }
            continue;
        }
        let due = if fits { due } else { None };
        let finished = match drain_until {
            // Not before `stop` closes the channel: the intake may still bring work.
            Some(deadline) => closed && due.is_none_or(|at| at > deadline),
            None => closed,
        };
        if finished {
            if let Err(error) = persist(&shared.store, &destination.id, lane_no, &lane).await {
                tracing::error!(destination = %destination.id, lane = lane_no, "could not store the lane: {error}");
            }
            return;
        }
        let mut wait = match (due, drain_until) {
            (Some(at), _) => Duration::from_millis((at - now).max(0) as u64),
            (None, Some(deadline)) => Duration::from_millis((deadline - now).max(0) as u64),
            (None, None) => Duration::from_secs(3600),
        };
        if off {
            wait = wait.min(Duration::from_secs(1)); // to notice a re-enable
        }
        if dirty {
            let since = stored_at.elapsed();
            if since >= PERSIST_EVERY {
                if let Err(error) = persist(&shared.store, &destination.id, lane_no, &lane).await {
                    tracing::error!(destination = %destination.id, lane = lane_no, "could not store the lane: {error}");
                }
                (stored_at, dirty) = (tokio::time::Instant::now(), false);
            } else {
                wait = wait.min(PERSIST_EVERY - since);
            }
        }
        if closed {
            tokio::time::sleep(wait).await;
            continue;
        }
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Push(messages, ack)) => {
                    for message in messages {
                        lane.push(message);
                    }
                    let _ = ack.send(persist(&shared.store, &destination.id, lane_no, &lane).await);
                }
                Some(Command::Forget(profiles, ack)) => {
                    let result = if lane.forget(&profiles) > 0 {
                        persist(&shared.store, &destination.id, lane_no, &lane).await
                    } else {
                        Ok(())
                    };
                    let _ = ack.send(result);
                }
                Some(Command::Replay(request, ack)) => {
                    lane.replay(*request, now_ms());
                    let _ = ack.send(persist(&shared.store, &destination.id, lane_no, &lane).await);
                }
                Some(Command::Stop(ack)) => {
                    let _ = ack.send(persist(&shared.store, &destination.id, lane_no, &lane).await);
                    return;
                }
                None => closed = true,
            },
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One attempt of the lane's due request: rate limit, sign, send, settle, store, log.
pub(super) async fn attempt<S: ObjectStore + Clone>(
    shared: &Arc<Shared<S>>,
    destination: &DestinationDefinition,
    lane_no: usize,
    lane: &mut Lane,
    disabled: &AtomicBool,
) {
    let Some(now) = crate::config::now().ok() else { return };
    let Some(request) = lane.next(&destination.id, &destination.batching, now).cloned() else { return };
    if let Some(rate) = shared.rates.get(&destination.id) {
        let slot = {
            let mut next = rate.lock().await;
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + Duration::from_secs(1) / destination.rate_limit_per_second.max(1);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
    let at = now_ms();
    let timestamp = at / 1000;
    let body = Bytes::from(request.body.clone().into_bytes());
    // Never an unsigned webhook: a destination whose secret is missing gets nothing (a dead letter, replayable
    // once the secret is stored).
    let Attempt { outcome, elapsed } = if destination.signing_secrets(at).next().is_none() {
        let reason = format!(
            "destination {} has no signing secret ({})",
            destination.id,
            shared::activation::DESTINATION_SECRETS
        );
        Attempt { outcome: Outcome::Refused { reason }, elapsed: Duration::ZERO }
    } else {
        let signature = shared::activation::signing::signature_header(
            destination.signing_secrets(at),
            &request.webhook_id,
            timestamp,
            &body,
        );
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("user-agent".to_string(), "cdp-webhooks/1".to_string()),
            ("webhook-id".to_string(), request.webhook_id.clone()),
            ("webhook-timestamp".to_string(), timestamp.to_string()),
            ("webhook-signature".to_string(), signature),
        ];
        headers.extend(destination.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        shared
            .sender
            .post(
                &destination.url,
                &headers,
                body,
                Duration::from_millis(destination.timeout_ms),
                destination.follow_redirects,
            )
            .await
    };
    let verdict = destination.retry_schedule.verdict(request.attempts + 1, &outcome);
    let error = match &verdict {
        Verdict::Delivered => None,
        _ => Some(describe(&outcome)),
    };
    let end = now_ms();
    let settled = lane.settle(verdict, error, end);
    match &settled {
        Some(Settled::Delivered(request)) => outcomes(shared, destination, request, None, end),
        Some(Settled::Dead(request, reason)) => outcomes(shared, destination, request, Some(reason), end),
        Some(Settled::Disabled(request)) => {
            outcomes(shared, destination, request, Some("the partner answered 410 Gone"), end)
        }
        _ => {}
    }
    let result = match &settled {
        Some(Settled::Delivered(_)) => "delivered",
        Some(Settled::Retrying { .. }) => "retrying",
        Some(Settled::Dead(request, reason)) => {
            let dead = DeadLetter {
                destination: destination.id.clone(),
                lane: lane_no,
                reason: reason.clone(),
                dead_at: end,
                request: request.clone(),
            };
            store_dead(&shared.store, &dead).await;
            "dead"
        }
        Some(Settled::Disabled(request)) => {
            disabled.store(true, Ordering::Relaxed);
            let reason = format!("the partner answered 410 Gone for {}", request.webhook_id);
            let status = Disabled { reason: reason.clone(), at: end };
            if let Ok(body) = serde_json::to_vec_pretty(&status)
                && let Err(error) = shared.store.put(&status_key(&destination.id), body, PutOptions::json()).await
            {
                tracing::error!(destination = %destination.id, "could not store the disabled status: {error}");
            }
            tracing::warn!(destination = %destination.id, "disabled: {reason}");
            let dead = DeadLetter {
                destination: destination.id.clone(),
                lane: lane_no,
                reason,
                dead_at: end,
                request: request.clone(),
            };
            store_dead(&shared.store, &dead).await;
            "disabled"
        }
        None => return,
    };
    let record = AttemptRecord {
        destination: destination.id.clone(),
        webhook_id: request.webhook_id.clone(),
        item_ids: request.item_ids.clone(),
        attempt: request.attempts + 1,
        at,
        outcome,
        result: result.to_string(),
        elapsed_ms: elapsed.as_millis() as u64,
        latency_ms: end - request.oldest_enqueued_at,
    };
    if let Some(observer) = &shared.observer {
        let _ = observer.send(record.clone());
    }
    let _ = shared.log.send(record);
}
