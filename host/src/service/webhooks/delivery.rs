//! Delivering a tenant's outbox to its endpoints: a pass per endpoint, a page at a time,
//! customers side by side and each customer's triggers in order, the cursor moved in the
//! store only past what was delivered or dead-lettered; the retry schedule, turning a
//! failing endpoint off (and telling the tenant), and pruning the outbox behind every
//! enabled endpoint.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};

use super::{DISABLE_AFTER_DEAD_IN_A_ROW, Webhooks, sign};
use crate::domain::SYSTEM;
use crate::domain::records::{
    CustomerSnapshot, DeliveryAttempt, OutboxTrigger, RawJson, StoredEvent, WebhookRecord,
};
use crate::service::clock::system_now;
use crate::service::error::ServiceError;
use crate::storage::StoreError;

/// The most of a response body an attempt keeps.
const RESPONSE_EXCERPT_BYTES: usize = 512;

/// How many triggers of the outbox one pass looks at per endpoint.
const OUTBOX_PAGE: usize = 500;

/// How many customers' triggers one endpoint is sent at once (each customer's one after
/// another): enough to keep a receiver that answers in a millisecond busy at thousands a
/// second, few enough not to flood one that is slow.
const DELIVERIES_IN_FLIGHT: usize = 32;

impl Webhooks {
    /// Starts a pass for every enabled endpoint of every tenant that is due and has none
    /// running: each delivers up to a page of its outbox, in order, on a task of its own, so
    /// a slow receiver holds up only its own endpoint. Answers how many passes it started.
    pub async fn deliver_due(self: &Arc<Self>) -> Result<usize, ServiceError> {
        let store = self.store.clone();
        let endpoints = tokio::task::spawn_blocking(move || store.webhooks(None))
            .await
            .map_err(|error| {
                ServiceError::internal(format!("reading endpoints failed: {error}"))
            })??;
        let now = system_now();
        let mut started = 0;
        for (tenant, webhook) in endpoints {
            let waiting = webhook.delivery.retry_at.is_some_and(|at| at > now);
            if !webhook.enabled || waiting {
                continue;
            }
            let running = (tenant.clone(), webhook.id.clone());
            if !self.running().insert(running.clone()) {
                continue;
            }
            started += 1;
            let running = Running {
                webhooks: self.clone(),
                endpoint: running,
            };
            tokio::spawn(async move {
                let webhooks = &running.webhooks;
                if let Err(error) = webhooks.deliver_endpoint(&tenant, webhook).await {
                    tracing::warn!(error = %error.message, "a webhook pass failed");
                }
                drop(running);
            });
        }
        Ok(started)
    }

    /// The endpoints with a pass running, by tenant and id.
    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Delivers `webhook`'s wanted triggers after its cursor a page at a time until it has
    /// caught up with the outbox or one fails (see [`Webhooks::deliver_page`]).
    async fn deliver_endpoint(
        &self,
        tenant: &str,
        mut webhook: WebhookRecord,
    ) -> Result<usize, ServiceError> {
        let mut delivered = 0;
        loop {
            let page = self.deliver_page(tenant, &webhook).await?;
            delivered += page.delivered;
            match page.go_on {
                Some(stored) => webhook = stored,
                None => return Ok(delivered),
            }
        }
    }

    /// Delivers a page of `webhook`'s outbox after its cursor: each customer's wanted
    /// triggers one after another in outbox order, up to [`DELIVERIES_IN_FLIGHT`] customers
    /// at once. Then, walking the page in order, the cursor passes every trigger delivered
    /// (or dead-lettered) up to the first that failed, and the attempts and the new cursor
    /// are recorded in one commit. A trigger delivered past that point, or before a crash
    /// ahead of the commit, is sent again later with the same `webhook-id`: at least once.
    async fn deliver_page(
        &self,
        tenant: &str,
        webhook: &WebhookRecord,
    ) -> Result<PageDelivered, ServiceError> {
        let store = self.store.clone();
        let (owner, after) = (tenant.to_owned(), webhook.delivery.after);
        let (page, events) = tokio::task::spawn_blocking(move || {
            let page = store.outbox(&owner, after, OUTBOX_PAGE)?;
            // The events the page's triggers came from, read once for the page.
            let mut events = HashMap::new();
            for trigger in &page {
                if !events.contains_key(&trigger.event_id) {
                    let event = store.event(&owner, &trigger.event_id)?;
                    events.insert(trigger.event_id.clone(), event);
                }
            }
            Ok::<_, StoreError>((page, events))
        })
        .await
        .map_err(|error| ServiceError::internal(format!("reading the outbox failed: {error}")))??;
        let full_page = page.len() == OUTBOX_PAGE;

        // Each customer's wanted triggers, in outbox order, delivered as a chain that stops at
        // its first failure; chains of different customers run side by side.
        let mut chains: Vec<Vec<&OutboxTrigger>> = Vec::new();
        let mut chain_of: HashMap<&str, usize> = HashMap::new();
        for trigger in page.iter().filter(|trigger| webhook.wants(&trigger.name)) {
            let index = *chain_of
                .entry(trigger.customer.as_str())
                .or_insert_with(|| {
                    chains.push(Vec::new());
                    chains.len() - 1
                });
            chains[index].push(trigger);
        }
        let chains: Vec<_> = chains
            .into_iter()
            .map(|chain| self.deliver_chain(tenant, webhook, chain, &events))
            .collect();
        let tried: Vec<Vec<(u64, DeliveryAttempt)>> = futures_util::stream::iter(chains)
            .buffer_unordered(DELIVERIES_IN_FLIGHT)
            .collect()
            .await;
        let mut tried: HashMap<u64, DeliveryAttempt> = tried.into_iter().flatten().collect();

        let started_from = webhook.delivery.clone();
        let mut state = webhook.delivery.clone();
        let mut attempts = Vec::new();
        let mut stopped = false;
        for trigger in &page {
            if !webhook.wants(&trigger.name) {
                // Not this endpoint's: the cursor passes it without a log line.
                state.after = trigger.seq;
                continue;
            }
            // Not tried: its customer's chain stopped at an earlier failure.
            let Some(mut attempt) = tried.remove(&trigger.seq) else {
                stopped = true;
                break;
            };
            let delivered = attempt.outcome == "delivered";
            let retry = self.settings.retry_schedule.get(state.attempts as usize);
            match (delivered, retry) {
                (true, _) => {
                    state.after = trigger.seq;
                    state.attempts = 0;
                    state.retry_at = None;
                    state.delivered += 1;
                    state.dead_in_a_row = 0;
                }
                (false, Some(wait)) => {
                    attempt.outcome = "retrying".to_owned();
                    state.attempts += 1;
                    state.retry_at = Some(system_now().plus_seconds(jittered_seconds(*wait)));
                }
                (false, None) => {
                    attempt.outcome = "dead_lettered".to_owned();
                    state.after = trigger.seq;
                    state.attempts = 0;
                    state.retry_at = None;
                    state.dead_lettered += 1;
                    state.dead_in_a_row += 1;
                }
            }
            let stop =
                attempt.outcome == "retrying" || state.dead_in_a_row >= DISABLE_AFTER_DEAD_IN_A_ROW;
            attempts.push(attempt);
            if stop {
                stopped = true;
                break;
            }
        }
        // Attempts past where the cursor stopped happened too: they are logged, and sent again
        // once the cursor gets to them.
        let mut beyond: Vec<DeliveryAttempt> = tried
            .into_values()
            .map(|mut attempt| {
                if attempt.outcome.is_empty() {
                    attempt.outcome = "retrying".to_owned();
                }
                attempt
            })
            .collect();
        beyond.sort_by_key(|attempt| attempt.outbox_seq);
        attempts.extend(beyond);
        if state == started_from {
            return Ok(PageDelivered {
                delivered: 0,
                go_on: None,
            });
        }
        let delivered = state.delivered - started_from.delivered;
        let turned_off = (state.dead_in_a_row >= DISABLE_AFTER_DEAD_IN_A_ROW).then(|| {
            format!(
                "{} triggers in a row were dead-lettered",
                state.dead_in_a_row
            )
        });
        if let Some(reason) = &turned_off {
            tracing::warn!(tenant, endpoint = %webhook.id, %reason, "webhook endpoint turned off");
        }
        let store = self.store.clone();
        let (owner, id) = (tenant.to_owned(), webhook.id.clone());
        let reason = turned_off.clone();
        let (stored, applied) = tokio::task::spawn_blocking(move || {
            let mut applied = false;
            let stored = store.update_webhook(
                &owner,
                &id,
                &mut |stored| {
                    // A redelivery asked for meanwhile moved the cursor: it wins, and this
                    // pass's attempts are only logged.
                    if stored.delivery.after != started_from.after {
                        return;
                    }
                    applied = true;
                    stored.delivery = state.clone();
                    if let Some(reason) = &reason {
                        stored.enabled = false;
                        stored.disabled_reason = Some(reason.clone());
                    }
                },
                &attempts,
            )?;
            Ok::<_, StoreError>((stored, applied))
        })
        .await
        .map_err(|error| {
            ServiceError::internal(format!("recording deliveries failed: {error}"))
        })??;
        if applied && let Some(reason) = turned_off {
            self.tell_tenant_turned_off(tenant, &stored, &reason).await;
        }
        let go_on = applied && full_page && !stopped && stored.enabled;
        Ok(PageDelivered {
            delivered: usize::try_from(delivered).unwrap_or(usize::MAX),
            go_on: go_on.then_some(stored),
        })
    }

    /// One customer's triggers, one after another, until one is not delivered.
    async fn deliver_chain(
        &self,
        tenant: &str,
        webhook: &WebhookRecord,
        chain: Vec<&OutboxTrigger>,
        events: &HashMap<String, Option<StoredEvent>>,
    ) -> Vec<(u64, DeliveryAttempt)> {
        let mut tried = Vec::with_capacity(chain.len());
        for trigger in chain {
            let event = events.get(&trigger.event_id).and_then(Option::as_ref);
            let attempt = self.attempt(tenant, webhook, trigger, event).await;
            let failed = attempt.outcome != "delivered";
            tried.push((trigger.seq, attempt));
            if failed {
                break;
            }
        }
        tried
    }

    /// One POST of `trigger` to `webhook`; the outcome is filled in by the caller.
    async fn attempt(
        &self,
        tenant: &str,
        webhook: &WebhookRecord,
        trigger: &OutboxTrigger,
        event: Option<&StoredEvent>,
    ) -> DeliveryAttempt {
        let message_id = format!("msg_{}_{}", webhook.id, trigger.seq);
        let now = system_now();
        let mut attempt = DeliveryAttempt {
            seq: 0,
            outbox_seq: trigger.seq,
            message_id: message_id.clone(),
            trigger: trigger.name.clone(),
            at: now,
            status: None,
            latency_ms: 0,
            error: None,
            response: String::new(),
            outcome: String::new(),
        };
        let body = match payload(tenant, trigger, event) {
            Ok(body) => body,
            Err(error) => {
                attempt.error = Some(error.message);
                return attempt;
            }
        };
        // Checked again: the operator may have stopped allowing private endpoints since.
        if let Err(refused) = self.check_url(&webhook.url) {
            attempt.error = Some(refused.message);
            return attempt;
        }
        let timestamp = system_now().unix_seconds();
        let signatures = webhook
            .secrets
            .iter()
            .filter(|secret| secret.expires_at.is_none_or(|end| end > now))
            .filter_map(|secret| sign(&secret.secret, &message_id, timestamp, &body))
            .collect::<Vec<_>>()
            .join(" ");
        let started = Instant::now();
        let sent = self
            .client
            .post(&webhook.url)
            .header("content-type", "application/json")
            .header("webhook-id", &message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signatures)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                attempt.status = Some(status.as_u16());
                let bytes = response.bytes().await.unwrap_or_default();
                let excerpt = &bytes[..bytes.len().min(RESPONSE_EXCERPT_BYTES)];
                attempt.response = String::from_utf8_lossy(excerpt).into_owned();
                if status.is_success() {
                    attempt.outcome = "delivered".to_owned();
                }
            }
            Err(error) => {
                attempt.error = Some(if error.is_timeout() {
                    format!("no answer within {} ms", self.settings.timeout.as_millis())
                } else {
                    error.to_string()
                });
            }
        }
        attempt.latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        attempt
    }
}

/// The body POSTed for `trigger`: Standard Webhooks' `{type, timestamp, data}`, the data
/// holding the trigger, the event it came from, and the customer as it left them.
fn payload(
    tenant: &str,
    trigger: &OutboxTrigger,
    event: Option<&StoredEvent>,
) -> Result<Vec<u8>, ServiceError> {
    let event = event.map(|event| {
        json!({"id": event.id, "action": event.action, "timestamp": event.timestamp,
               "points": event.points, "data": event.data})
    });
    let customer = trigger.snapshot.as_ref().map(CustomerSnapshot::view);
    let body = json!({
        "type": trigger.name,
        "timestamp": event.as_ref().map_or(Value::Null, |event| event["timestamp"].clone()),
        "data": {
            "tenant": tenant,
            "seq": trigger.seq,
            "plugin": trigger.plugin,
            "customer_id": trigger.customer,
            "trigger": trigger.data,
            "event": event,
            "customer": customer,
        }
    });
    serde_json::to_vec(&body)
        .map_err(|error| ServiceError::internal(format!("cannot write a payload: {error}")))
}

/// What a page's delivery did.
struct PageDelivered {
    delivered: usize,
    /// The endpoint as stored after the page, when the pass goes on with the next page.
    go_on: Option<WebhookRecord>,
}

impl Webhooks {
    /// Tells the tenant that the host turned an endpoint off: a `WebhookEndpointDisabled`
    /// trigger in its outbox (for its other endpoints and `GET /v1/triggers`).
    async fn tell_tenant_turned_off(&self, tenant: &str, webhook: &WebhookRecord, reason: &str) {
        let data = json!({"endpoint": webhook.id, "url": webhook.url, "reason": reason});
        let trigger = OutboxTrigger {
            seq: 0,
            event_id: String::new(),
            customer: String::new(),
            plugin: SYSTEM.to_owned(),
            name: ENDPOINT_DISABLED.to_owned(),
            data: RawJson::from_value(&data),
            snapshot: None,
            created_at: Some(system_now()),
        };
        let store = self.store.clone();
        let owner = tenant.to_owned();
        match tokio::task::spawn_blocking(move || store.add_trigger(&owner, &trigger)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::error!(tenant, %error, "cannot tell a tenant its endpoint is off")
            }
            Err(error) => {
                tracing::error!(tenant, %error, "telling a tenant its endpoint is off panicked")
            }
        }
    }

    /// Removes the triggers every tenant's enabled endpoints are past and that are older
    /// than the retention; answers how many went.
    pub fn prune_outboxes(&self) -> Result<usize, ServiceError> {
        let before = system_now().plus_seconds(
            -i64::try_from(self.settings.outbox_retention.as_secs()).unwrap_or(i64::MAX),
        );
        let mut lowest: HashMap<String, u64> = HashMap::new();
        for (tenant, webhook) in self.store.webhooks(None)? {
            if webhook.enabled {
                let cursor = lowest.entry(tenant).or_insert(u64::MAX);
                *cursor = (*cursor).min(webhook.delivery.after);
            }
        }
        let mut pruned = 0;
        for tenant in self.store.tenants()? {
            let up_to = lowest.get(tenant.id.as_str()).copied().unwrap_or(u64::MAX);
            loop {
                let gone = self
                    .store
                    .prune_outbox(&tenant.id, up_to, before, PRUNE_BATCH)?;
                pruned += gone;
                if gone < PRUNE_BATCH {
                    break;
                }
            }
        }
        Ok(pruned)
    }
}

/// The trigger the host sends a tenant when it turns one of its endpoints off.
pub const ENDPOINT_DISABLED: &str = "WebhookEndpointDisabled";

/// Triggers removed a transaction, so that pruning never holds the writer up for long.
const PRUNE_BATCH: usize = 10_000;

/// How often the outbox is pruned at most: every minute, or as often as the retention when
/// it is shorter (a test's).
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// An endpoint's pass while it runs: dropped, however the pass ended (a panic included),
/// it lets the next pass of the endpoint start.
struct Running {
    webhooks: Arc<Webhooks>,
    endpoint: (String, String),
}

impl Drop for Running {
    fn drop(&mut self) {
        self.webhooks.running().remove(&self.endpoint);
    }
}

/// Runs [`Webhooks::deliver_due`] every 200 ms, and [`Webhooks::prune_outboxes`] every
/// minute, for the host's life.
pub async fn run_webhooks(webhooks: Arc<Webhooks>) {
    let mut ticks = tokio::time::interval(Duration::from_millis(200));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned_at = Instant::now();
    loop {
        ticks.tick().await;
        if let Err(error) = webhooks.deliver_due().await {
            tracing::warn!(error = %error.message, "webhook delivery could not read its work");
        }
        let every = webhooks
            .settings
            .outbox_retention
            .clamp(Duration::from_secs(1), PRUNE_EVERY);
        if pruned_at.elapsed() >= every {
            pruned_at = Instant::now();
            let pruning = webhooks.clone();
            match tokio::task::spawn_blocking(move || pruning.prune_outboxes()).await {
                Ok(Ok(0)) => {}
                Ok(Ok(pruned)) => tracing::info!(pruned, "outbox pruned"),
                Ok(Err(error)) => {
                    tracing::warn!(error = %error.message, "pruning the outbox failed")
                }
                Err(error) => tracing::error!(%error, "pruning the outbox panicked"),
            }
        }
    }
}

/// `wait` less up to a tenth at random, in whole seconds (the clock's unit), at least one.
fn jittered_seconds(wait: Duration) -> i64 {
    let millis = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
    let mut byte = [0_u8; 1];
    let spread = match getrandom::fill(&mut byte) {
        Ok(()) => millis / 10 * i64::from(byte[0]) / 255,
        Err(_) => 0,
    };
    ((millis - spread) / 1000).max(1)
}
