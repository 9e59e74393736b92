//! Outbound webhooks: each tenant's endpoints, and the delivery of its outbox to them.
//!
//! An endpoint follows the tenant's outbox with a cursor (`DeliveryState::after`): the
//! triggers after it that the endpoint wants are POSTed, signed per the Standard Webhooks
//! specification, and the cursor moves on only past those delivered (a 2xx) or given up on
//! after the retry schedule (dead-lettered). So delivery is at least once, in order per
//! customer, and survives a restart: the cursor is in the store, and a trigger whose answer
//! was lost is sent again with the same `webhook-id` for the receiver to drop. This file
//! holds the endpoints and where they may be; `delivery.rs` the delivery itself.
//!
//! Private and loopback addresses are refused, at registration for an address written in
//! the URL and at delivery for whatever a name resolves to, unless the operator allows them
//! (`tally serve --allow-private-webhooks`).

mod delivery;

pub use self::delivery::{ENDPOINT_DISABLED, run_webhooks};

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tally_sdk::Timestamp;

use super::clock::system_now;
use super::error::{ErrorKind, ServiceError};
use crate::domain::records::{DeliveryAttempt, DeliveryState, WebhookRecord, WebhookSecret};
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
