//! Outbound webhooks: each tenant's endpoints, and the delivery of its outbox to them.
//!
//! An endpoint follows the tenant's outbox with a cursor (`DeliveryState::after`): the next
//! trigger after it that the endpoint wants is POSTed, signed per the Standard Webhooks
//! specification, and the cursor moves on only once it was delivered (a 2xx) or given up on
//! after the retry schedule (dead-lettered). So delivery is at least once, in outbox order
//! (and so in order per customer), and survives a restart: the cursor is in the store, and a
//! trigger whose answer was lost is sent again with the same `webhook-id` for the receiver
//! to drop.
//!
//! Private and loopback addresses are refused, at registration for an address written in
//! the URL and at delivery for whatever a name resolves to, unless the operator allows them
//! (`tally serve --allow-private-webhooks`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures_util::StreamExt as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tally_sdk::Timestamp;

use super::clock::system_now;
use super::error::{ErrorKind, ServiceError};
use crate::domain::SYSTEM;
use crate::domain::records::{
    CustomerSnapshot, DeliveryAttempt, DeliveryState, OutboxTrigger, RawJson, StoredEvent,
    WebhookRecord, WebhookSecret,
};
use crate::storage::{Store, StoreError};

/// How the host delivers webhooks.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Whether endpoints may be on private, loopback or link-local addresses.
    pub allow_private: bool,
    /// How long to wait before each retry of a failed delivery; after the last, the trigger
    /// is dead-lettered.
    pub retry_schedule: Vec<Duration>,
    /// How long one attempt may take, connecting included.
    pub timeout: Duration,
    /// How long a trigger stays in the outbox (for `GET /v1/triggers`) once every enabled
    /// endpoint is past it.
    pub outbox_retention: Duration,
}

/// How many days a delivered trigger stays in the outbox by default: a week, long enough for
/// a poller that was down over a weekend to catch up.
pub const DEFAULT_OUTBOX_RETENTION_DAYS: u64 = 7;

/// The default retries: the first within ten seconds, then spread over about a day
/// (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: 27 h 35 min in all), each with up to a tenth
/// of jitter, so that receivers coming back are not hit by every sender at once.
pub const DEFAULT_RETRY_SCHEDULE: [u64; 7] = [5, 300, 1_800, 7_200, 18_000, 36_000, 36_000];

impl Default for WebhookSettings {
    fn default() -> WebhookSettings {
        WebhookSettings {
            allow_private: false,
            retry_schedule: DEFAULT_RETRY_SCHEDULE
                .iter()
                .map(|&seconds| Duration::from_secs(seconds))
                .collect(),
            timeout: Duration::from_secs(10),
            outbox_retention: Duration::from_secs(DEFAULT_OUTBOX_RETENTION_DAYS * 24 * 60 * 60),
        }
    }
}

/// An endpoint given up on this many triggers in a row, with no delivery between, is turned
/// off: a receiver gone for days should not hold a retry schedule per trigger for ever.
pub const DISABLE_AFTER_DEAD_IN_A_ROW: u32 = 5;

/// How long the old secret of a rotation stays valid.
const ROTATION_OVERLAP_SECONDS: i64 = 24 * 60 * 60;

/// The most of a response body an attempt keeps.
const RESPONSE_EXCERPT_BYTES: usize = 512;

/// How many triggers of the outbox one pass looks at per endpoint.
const OUTBOX_PAGE: usize = 500;

/// How many customers' triggers one endpoint is sent at once (each customer's one after
/// another): enough to keep a receiver that answers in a millisecond busy at thousands a
/// second, few enough not to flood one that is slow.
const DELIVERIES_IN_FLIGHT: usize = 32;

/// A new endpoint.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    /// Where triggers go.
    pub url: String,
    /// Trigger names, or `*`.
    pub triggers: Vec<String>,
}

/// A change to an endpoint: the fields given.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    /// A new URL.
    pub url: Option<String>,
    /// New trigger names.
    pub triggers: Option<Vec<String>>,
    /// On or off (turning it on clears why the host turned it off).
    pub enabled: Option<bool>,
}

/// Webhook endpoints and their delivery.
///
/// Delivery runs on the system's time, not the host's clock: retries wait for real seconds
/// even on a test clock, and receivers check signatures against their own time.
pub struct Webhooks {
    store: Arc<dyn Store>,
    settings: WebhookSettings,
    /// Endpoints with a pass running: one pass an endpoint at a time keeps its order.
    running: std::sync::Mutex<HashSet<(String, String)>>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    pub(super) fn new(
        store: Arc<dyn Store>,
        settings: WebhookSettings,
    ) -> Result<Webhooks, ServiceError> {
        let mut client = reqwest::Client::builder();
        if !settings.allow_private {
            // Every name is resolved here, and only to public addresses: a name that
            // resolved to a public address when checked cannot be made to point inside at
            // the moment of the request.
            client = client.dns_resolver(Arc::new(PublicOnly));
        }
        let client = client
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            // A redirect could lead to an address the checks refused.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tally-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| ServiceError::internal(format!("cannot build the client: {error}")))?;
        Ok(Webhooks {
            store,
            settings,
            running: std::sync::Mutex::new(HashSet::new()),
            client,
        })
    }

    /// Adds an endpoint with a new secret.
    pub fn create(&self, tenant: &str, new: NewWebhook) -> Result<WebhookRecord, ServiceError> {
        self.check_url(&new.url)?;
        check_triggers(&new.triggers)?;
        let now = system_now();
        let start = self.store.last_outbox_seq(tenant)?;
        let webhook = WebhookRecord {
            id: format!(
                "wh_{}",
                crate::auth::random_hex(8)
                    .map_err(|error| ServiceError::internal(error.to_string()))?
            ),
            url: new.url,
            triggers: new.triggers,
            secrets: vec![new_secret(now)?],
            enabled: true,
            disabled_reason: None,
            created_at: now,
            // Triggers from now on: an endpoint added today is not sent last year's.
            delivery: DeliveryState {
                after: start,
                ..DeliveryState::default()
            },
        };
        self.store.create_webhook(tenant, &webhook)?;
        Ok(webhook)
    }

    /// The tenant's endpoints.
    pub fn list(&self, tenant: &str) -> Result<Vec<WebhookRecord>, ServiceError> {
        Ok(self
            .store
            .webhooks(Some(tenant))?
            .into_iter()
            .map(|(_, webhook)| webhook)
            .collect())
    }

    /// One endpoint, or `404`.
    pub fn get(&self, tenant: &str, id: &str) -> Result<WebhookRecord, ServiceError> {
        self.store.webhook(tenant, id)?.ok_or_else(|| not_found(id))
    }

    /// Changes the fields `patch` gives.
    pub fn update(
        &self,
        tenant: &str,
        id: &str,
        patch: WebhookPatch,
    ) -> Result<WebhookRecord, ServiceError> {
        if let Some(url) = &patch.url {
            self.check_url(url)?;
        }
        if let Some(triggers) = &patch.triggers {
            check_triggers(triggers)?;
        }
        self.change(tenant, id, &mut |webhook| {
            if let Some(url) = &patch.url {
                webhook.url.clone_from(url);
            }
            if let Some(triggers) = &patch.triggers {
                webhook.triggers.clone_from(triggers);
            }
            if let Some(enabled) = patch.enabled {
                webhook.enabled = enabled;
                if enabled {
                    webhook.disabled_reason = None;
                    webhook.delivery.dead_in_a_row = 0;
                }
            }
        })
    }

    /// A new secret; the old one signs too for the next 24 hours, so receivers can switch.
    pub fn rotate(&self, tenant: &str, id: &str) -> Result<WebhookRecord, ServiceError> {
        let now = system_now();
        let secret = new_secret(now)?;
        self.change(tenant, id, &mut |webhook| {
            webhook
                .secrets
                .retain(|old| old.expires_at.is_none_or(|end| end > now));
            for old in &mut webhook.secrets {
                old.expires_at = Some(
                    old.expires_at
                        .unwrap_or(now.plus_seconds(ROTATION_OVERLAP_SECONDS)),
                );
            }
            webhook.secrets.insert(0, secret.clone());
        })
    }

    /// Delivers again every wanted trigger after outbox number `after` (dead-lettered ones
    /// included), and turns the endpoint back on.
    pub fn redeliver(
        &self,
        tenant: &str,
        id: &str,
        after: u64,
    ) -> Result<WebhookRecord, ServiceError> {
        self.change(tenant, id, &mut |webhook| {
            webhook.delivery.after = after;
            webhook.delivery.attempts = 0;
            webhook.delivery.retry_at = None;
            webhook.delivery.dead_in_a_row = 0;
            webhook.enabled = true;
            webhook.disabled_reason = None;
        })
    }

    /// Removes an endpoint and its log.
    pub fn delete(&self, tenant: &str, id: &str) -> Result<(), ServiceError> {
        if self.store.delete_webhook(tenant, id)? {
            Ok(())
        } else {
            Err(not_found(id))
        }
    }

    /// The endpoint's latest attempts, newest first, before attempt `before`.
    pub fn attempts(
        &self,
        tenant: &str,
        id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeliveryAttempt>, ServiceError> {
        self.get(tenant, id)?;
        Ok(self.store.webhook_attempts(tenant, id, before, limit)?)
    }

    fn change(
        &self,
        tenant: &str,
        id: &str,
        change: &mut dyn FnMut(&mut WebhookRecord),
    ) -> Result<WebhookRecord, ServiceError> {
        match self.store.update_webhook(tenant, id, change, &[]) {
            Err(StoreError::NotFound(_)) => Err(not_found(id)),
            other => Ok(other?),
        }
    }

    /// A URL the host may deliver to: http or https, with a host, not a private address
    /// unless allowed.
    fn check_url(&self, url: &str) -> Result<(), ServiceError> {
        let invalid = |why: String| {
            ServiceError::new(ErrorKind::Unprocessable, "invalid_webhook", why)
                .with_details(json!({"field": "url"}))
        };
        let parsed = reqwest::Url::parse(url)
            .map_err(|error| invalid(format!("{url:?} is not a URL: {error}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(invalid(format!("{url:?} is not http or https")));
        }
        let private = match parsed.host() {
            None => return Err(invalid(format!("{url:?} has no host"))),
            Some(url::Host::Ipv4(ip)) => is_private(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => is_private(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => {
                name.eq_ignore_ascii_case("localhost") || name.ends_with(".localhost")
            }
        };
        if private && !self.settings.allow_private {
            return Err(ServiceError::new(
                ErrorKind::Unprocessable,
                "private_destination",
                format!(
                    "{url:?} is a private or loopback address; the operator can allow such \
                     endpoints with `tally serve --allow-private-webhooks`"
                ),
            )
            .with_details(json!({"field": "url"})));
        }
        Ok(())
    }
}

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

/// The resolver of a host that refuses private destinations: a name's private addresses
/// are dropped, and a name with no other is an error.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let public: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| !is_private(address.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves only to private addresses (allowed with \
                     --allow-private-webhooks)"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` with the key a `whsec_` secret holds:
/// the Standard Webhooks signature. `None` for a secret that is not one.
pub fn sign(secret: &str, message_id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = BASE64.decode(secret.strip_prefix("whsec_")?).ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

/// Loopback, private (RFC 1918, unique local), link-local, carrier-grade NAT, unspecified,
/// broadcast and documentation addresses: none of them a public receiver.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_documentation()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => is_private(IpAddr::V4(v4)),
            None => {
                let first = ip.segments()[0];
                ip.is_loopback()
                    || ip.is_unspecified()
                    || (first & 0xfe00) == 0xfc00
                    || (first & 0xffc0) == 0xfe80
            }
        },
    }
}

fn check_triggers(triggers: &[String]) -> Result<(), ServiceError> {
    if triggers.is_empty() || triggers.iter().any(|name| name.trim().is_empty()) {
        return Err(ServiceError::new(
            ErrorKind::Unprocessable,
            "invalid_webhook",
            "\"triggers\" lists trigger names (TierEarned, ...) or \"*\" for all, none empty",
        )
        .with_details(json!({"field": "triggers"})));
    }
    Ok(())
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::not_found(format!("no webhook endpoint {id:?}"))
}

/// A new `whsec_` secret: 24 random bytes.
fn new_secret(now: Timestamp) -> Result<WebhookSecret, ServiceError> {
    let mut bytes = [0_u8; 24];
    getrandom::fill(&mut bytes)
        .map_err(|error| ServiceError::internal(format!("no randomness: {error}")))?;
    Ok(WebhookSecret {
        secret: format!("whsec_{}", BASE64.encode(bytes)),
        created_at: now,
        expires_at: None,
    })
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should panic")]
mod tests {
    use super::*;

    /// The Standard Webhooks specification's published example: a receiver's library
    /// accepts what the host signs only if this comes out exactly.
    #[test]
    fn signatures_reproduce_the_specification_example() {
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(
            signature.as_deref(),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
        assert_eq!(sign("not-a-secret", "msg", 1, b"{}"), None);
    }

    #[test]
    fn public_addresses_obeyed() {
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:2800:220:1:248:1893:25c8:1946",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn private_addresses_violated() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
    }
}
