//! Customers: the profile, the event stream and the points ledger.
//!
//! - `GET /v1/customers?email=&tier=&member=&attribute.<name>=&limit=&cursor=`: customers,
//!   in id order, by condition; by the email index when an email is given
//! - `GET /v1/customers/{id}`: balance, lifetime points, tier, perks, attributes, stats and
//!   the contact card (fields marked `showInContactCard`, from recent events)
//! - `PUT /v1/customers/{id}` (whole) and `PATCH` (merge patch) `{"attributes": {...}}`: a
//!   `profile_update` event, checked against the tenant's customer schema
//! - `GET /v1/customers/{id}/events?action=a,b&channel=&campaign=&from=&to=&order=newest|oldest&limit=&cursor=`
//! - `GET /v1/customers/{id}/ledger?limit=&cursor=`: entries, oldest first, each with its event
//! - `POST /v1/customers/{id}/perks/{code}/redeem`: redeems a perk once (`perk_redeem`)
//! - `POST /v1/customers/{id}/rewards/{reward}/redeem`: spends a reward's cost and issues its
//!   perk (`reward_redeem`)
//! - `POST /v1/customers/{id}/merge` `{"from": "other"}`: moves the other customer's points,
//!   perks and profile to this one (`customer_merge`); the other id becomes an alias
//! - `DELETE /v1/customers/{id}`: erase the customer's personal data (right to be forgotten)
//! - `GET /v1/audit?after=&limit=`: the tenant's audit log (erasures), oldest first
//! - `GET /v1/triggers?after=&limit=`: the outbound triggers plugins sent, oldest first

use axum::Router;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tally_sdk::Timestamp;

use super::AppState;
use super::error::ApiError;
use super::extract::{Json, QueryParams, RequestOrigin, Tenant, blocking};
use super::views;
use crate::service::{CustomerFilter, ErrorKind};
use crate::storage::{DEFAULT_PAGE_LIMIT, EventQuery};

/// The most items one page may ask for.
pub const MAX_PAGE_LIMIT: usize = 500;

/// The customer routes, and the tenant's outbox of triggers.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/triggers", get(triggers))
        .route("/v1/customers", get(list))
        .route("/v1/audit", get(audit))
        .route(
            "/v1/customers/{id}",
            get(profile)
                .put(replace_profile)
                .patch(merge_profile)
                .delete(erase),
        )
        .route("/v1/customers/{id}/events", get(events))
        .route("/v1/customers/{id}/ledger", get(ledger))
        .route("/v1/customers/{id}/merge", post(merge_customers))
        .route("/v1/customers/{id}/perks/{code}/redeem", post(redeem_perk))
        .route(
            "/v1/customers/{id}/rewards/{reward}/redeem",
            post(redeem_reward),
        )
}

/// `GET /v1/customers?email=&tier=&member=&attribute.<name>=&limit=&cursor=`: the tenant's
/// customers, in id order, that meet every condition given.
async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    QueryParams(params): QueryParams<Vec<(String, String)>>,
) -> Result<axum::Json<Value>, ApiError> {
    let mut filter = CustomerFilter::default();
    let (mut limit, mut cursor) = (None, None);
    for (name, value) in params {
        match name.as_str() {
            "email" => filter.email = Some(value),
            "tier" => filter.tier = Some(value),
            "member" => {
                filter.member = Some(
                    value
                        .parse()
                        .map_err(|_| bad_query(format!("member={value}: true or false")))?,
                );
            }
            "limit" => {
                limit =
                    Some(value.parse().map_err(|_| {
                        bad_query(format!("limit={value}: a whole number of items"))
                    })?);
            }
            "cursor" => cursor = Some(value),
            other => match other.strip_prefix("attribute.") {
                Some(attribute) if !attribute.is_empty() => {
                    filter.attributes.push((attribute.to_owned(), value));
                }
                _ => {
                    return Err(bad_query(format!(
                        "unknown parameter {other:?}: customers are filtered by email, tier, \
                         member and attribute.<name>, and paged with limit and cursor"
                    )));
                }
            },
        }
    }
    let limit = page_limit(limit)?;
    let policy = tenant.policy();
    let page = blocking(&state, move |service| {
        service
            .queries
            .customers(&tenant.id, &filter, cursor.as_deref(), limit)
    })
    .await?;
    let items: Vec<_> = page
        .items
        .iter()
        .map(|record| views::customer(record, &policy))
        .collect();
    Ok(axum::Json(
        json!({"items": items, "next_cursor": page.next_cursor}),
    ))
}

/// `DELETE /v1/customers/{id}`: the customer's right to be forgotten (see
/// [`Ingest::erase`](crate::service::Ingest::erase)); answered with the erasure's event and
/// the customer as they remain.
async fn erase(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RequestOrigin(origin): RequestOrigin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let policy = tenant.policy();
    let ingested = state.service.ingest.erase(&tenant, &id, &origin).await?;
    Ok(axum::Json(views::ingested(&ingested, &policy)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeBody {
    /// The customer merged into the one in the path.
    from: String,
}

/// `POST /v1/customers/{id}/merge`: merges customer `from` into `id` (see
/// [`Ingest::merge`](crate::service::Ingest::merge)); answered as a posted event, with the
/// survivor as the merge left them.
async fn merge_customers(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RequestOrigin(origin): RequestOrigin,
    Path(id): Path<String>,
    Json(body): Json<MergeBody>,
) -> Result<Response, ApiError> {
    let policy = tenant.policy();
    let ingested = state
        .service
        .ingest
        .merge(&tenant, &id, &body.from, &origin)
        .await?;
    Ok(super::events::ingested_response(&ingested, &policy))
}

/// `GET /v1/audit?after=&limit=`: the tenant's audit log, oldest first.
async fn audit(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    QueryParams(query): QueryParams<SeqQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let limit = page_limit(query.limit)?;
    let after = query.after.unwrap_or(0);
    let entries = blocking(&state, move |service| {
        service.queries.audit(&tenant.id, after, limit)
    })
    .await?;
    Ok(seq_page(&entries, limit, |entry| entry.seq))
}

/// What `PUT` and `PATCH /v1/customers/{id}` take.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileBody {
    attributes: serde_json::Map<String, Value>,
    /// The event's id, to make a retried write idempotent.
    #[serde(default)]
    id: Option<String>,
}

/// Writes the profile whole: a `profile_update` event with `replace`.
async fn replace_profile(
    state: State<AppState>,
    tenant: Tenant,
    origin: RequestOrigin,
    Path(id): Path<String>,
    Json(body): Json<ProfileBody>,
) -> Result<Response, ApiError> {
    write_profile(state, tenant, origin, id, body, true).await
}

/// Merges into the profile: a `profile_update` event (JSON merge patch).
async fn merge_profile(
    state: State<AppState>,
    tenant: Tenant,
    origin: RequestOrigin,
    Path(id): Path<String>,
    Json(body): Json<ProfileBody>,
) -> Result<Response, ApiError> {
    write_profile(state, tenant, origin, id, body, false).await
}

/// A profile write is an event in the customer's history, so plugins may react to it and a
/// replay sees it; answered as a posted event.
async fn write_profile(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RequestOrigin(origin): RequestOrigin,
    id: String,
    body: ProfileBody,
    replace: bool,
) -> Result<Response, ApiError> {
    let mut input = json!({
        "customer": id,
        "action": "profile_update",
        "data": {"attributes": body.attributes, "replace": replace},
    });
    if let Some(event_id) = body.id {
        input["id"] = json!(event_id);
    }
    super::events::ingest_one(&state, tenant, origin, input).await
}

/// Redeems a reward: a `reward_redeem` event for the customer, answered as a posted event.
/// An `Idempotency-Key` header becomes the event's id.
async fn redeem_reward(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RequestOrigin(origin): RequestOrigin,
    Path((id, reward)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut input = json!({"customer": id, "action": "reward_redeem", "data": {"reward": reward}});
    if let Some(key) = idempotency_key(&headers)? {
        input["id"] = json!(key);
    }
    super::events::ingest_one(&state, tenant, origin, input).await
}

/// The `Idempotency-Key` header: the id of the event a route makes, so a retry is a replay.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|key| {
            key.to_str().map_err(|_| {
                ApiError::new(
                    ErrorKind::BadRequest,
                    "invalid_request",
                    "the Idempotency-Key header must be printable text",
                )
            })
        })
        .transpose()
}

/// Redeems a perk: a `perk_redeem` event for the customer, answered as a posted event. An
/// `Idempotency-Key` header becomes the event's id, so a retried request redeems once.
async fn redeem_perk(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RequestOrigin(origin): RequestOrigin,
    Path((id, code)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut input = json!({"customer": id, "action": "perk_redeem", "data": {"code": code}});
    if let Some(key) = idempotency_key(&headers)? {
        input["id"] = json!(key);
    }
    super::events::ingest_one(&state, tenant, origin, input).await
}

async fn profile(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let policy = tenant.policy();
    let customer = blocking(&state, move |service| {
        service.queries.customer(&tenant.id, &id)
    })
    .await?;
    Ok(axum::Json(views::customer(&customer, &policy)).into_response())
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    /// Comma-separated actions.
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    campaign: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    /// `newest` (the default) or `oldest`.
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
}

fn bad_query(message: String) -> ApiError {
    ApiError::new(ErrorKind::BadRequest, "invalid_query", message)
}

pub(super) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE_LIMIT),
        Some(limit @ 1..=MAX_PAGE_LIMIT) => Ok(limit),
        Some(other) => Err(bad_query(format!(
            "limit={other}: a page holds 1 to {MAX_PAGE_LIMIT} items"
        ))),
    }
}

fn time(name: &str, text: Option<String>) -> Result<Option<Timestamp>, ApiError> {
    text.filter(|text| !text.is_empty())
        .map(|text| {
            text.parse::<Timestamp>()
                .map_err(|error| bad_query(format!("{name}: {error}")))
        })
        .transpose()
}

async fn events(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<EventsQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let newest_first = match query.order.as_deref() {
        None | Some("newest") | Some("desc") => true,
        Some("oldest") | Some("asc") => false,
        Some(other) => {
            return Err(bad_query(format!(
                "order={other}: use newest (the default) or oldest"
            )));
        }
    };
    let actions = query.action.filter(|text| !text.is_empty()).map(|text| {
        text.split(',')
            .map(|action| action.trim().to_owned())
            .filter(|action| !action.is_empty())
            .collect::<Vec<_>>()
    });
    let event_query = EventQuery {
        actions,
        channel: query.channel.filter(|channel| !channel.is_empty()),
        campaign: query.campaign.filter(|campaign| !campaign.is_empty()),
        from: time("from", query.from)?,
        to: time("to", query.to)?,
        newest_first,
        limit: page_limit(query.limit)?,
        cursor: query.cursor.filter(|cursor| !cursor.is_empty()),
    };
    let page = blocking(&state, move |service| {
        service
            .queries
            .customer_events(&tenant.id, &id, &event_query)
    })
    .await?;
    Ok(axum::Json(
        json!({"items": page.items, "next_cursor": page.next_cursor}),
    ))
}

#[derive(Debug, Deserialize)]
struct LedgerQuery {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
}

async fn ledger(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<LedgerQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let limit = page_limit(query.limit)?;
    let cursor = query.cursor.filter(|cursor| !cursor.is_empty());
    let page = blocking(&state, move |service| {
        service
            .queries
            .ledger(&tenant.id, &id, limit, cursor.as_deref())
    })
    .await?;
    let items: Vec<Value> = page.items.iter().map(views::ledger_line).collect();
    Ok(axum::Json(
        json!({"items": items, "next_cursor": page.next_cursor}),
    ))
}

/// A page of a sequence the client follows (`after` the last `seq` it saw).
#[derive(Debug, Deserialize)]
struct SeqQuery {
    /// The `seq` of the last item already seen.
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `{"items", "next_after"}`: the next page starts after the last item of this one; a short
/// page is the end.
fn seq_page<T: serde::Serialize>(
    items: &[T],
    limit: usize,
    seq: impl Fn(&T) -> u64,
) -> axum::Json<Value> {
    let next_after = (items.len() == limit)
        .then(|| items.last().map(&seq))
        .flatten();
    axum::Json(json!({"items": items, "next_after": next_after}))
}

async fn triggers(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    QueryParams(query): QueryParams<SeqQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let limit = page_limit(query.limit)?;
    let after = query.after.unwrap_or(0);
    let items = blocking(&state, move |service| {
        service.queries.triggers(&tenant.id, after, limit)
    })
    .await?;
    let views: Vec<_> = items.iter().map(views::trigger).collect();
    Ok(seq_page(&views, limit, |view| view.seq))
}
