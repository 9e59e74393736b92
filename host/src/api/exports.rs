//! Exports, streamed page by page in constant memory, as NDJSON (the default, one JSON
//! object a line) or CSV:
//!
//! - `GET /v1/exports/events?from=&to=&action=a,b&channel=&campaign=&customer=&after=&format=`: events in id
//!   order (or a customer's, by time), each as `GET /v1/events/{id}` shows it;
//! - `GET /v1/exports/customers?after=&format=`: customers in id order, as
//!   `GET /v1/customers/{id}` shows them (aliases left out);
//! - `GET /v1/exports/ledger?after=&format=`: every ledger entry, customer by customer.
//!
//! An export that broke off resumes with `after`: the last event id, or the last customer
//! id (for the ledger, the last customer whose entries all arrived).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream;
use serde::Deserialize;
use std::borrow::Cow;

use serde_json::{Value, json};
use tally_sdk::Timestamp;

use super::AppState;
use super::error::ApiError;
use super::extract::{QueryParams, Tenant, blocking};
use super::views;
use crate::service::{ErrorKind, Service, ServiceError};
use crate::storage::{EventQuery, StoredEvent, TenantRecord};

/// The export routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/exports/{what}", get(export))
}

/// Items read a page at a time.
const PAGE: usize = 500;

#[derive(Debug, Deserialize)]
struct ExportQuery {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    from: Option<Timestamp>,
    #[serde(default)]
    to: Option<Timestamp>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    customer: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    campaign: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    Events,
    Customers,
    Ledger,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Csv,
}

/// What an export goes on from.
#[derive(Debug, Clone)]
struct Cursor {
    /// Where the next page starts: an id, or a customer history's own cursor.
    after: Option<String>,
    /// In a customer's history, the event id the client resumes after: its events up to
    /// that one are read past, not sent.
    skip_until: Option<String>,
    first: bool,
    done: bool,
}

impl Cursor {
    fn finished() -> Cursor {
        Cursor {
            after: None,
            skip_until: None,
            first: false,
            done: true,
        }
    }
}

async fn export(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(what): Path<String>,
    QueryParams(query): QueryParams<ExportQuery>,
) -> Result<Response, ApiError> {
    let what = match what.as_str() {
        "events" => What::Events,
        "customers" => What::Customers,
        "ledger" => What::Ledger,
        other => {
            return Err(ServiceError::not_found(format!(
                "no export {other:?}: there are events, customers and ledger"
            ))
            .into());
        }
    };
    let format = match query.format.as_deref() {
        None | Some("ndjson") => Format::Ndjson,
        Some("csv") => Format::Csv,
        Some(other) => {
            return Err(ApiError::new(
                ErrorKind::BadRequest,
                "invalid_query",
                format!("format {other:?}: ndjson or csv"),
            ));
        }
    };
    if let Some(customer) = &query.customer {
        // A customer that is not there is a 404 before the stream starts.
        let (tenant, customer) = (tenant.id.to_string(), customer.clone());
        blocking(&state, move |service| {
            service.queries.customer(&tenant, &customer)
        })
        .await?;
    }
    let resume = query.after.clone().filter(|after| !after.is_empty());
    // A customer's history pages by its own cursor; `after` is still the last event id.
    let (after, skip_until) = match &query.customer {
        Some(_) => (None, resume),
        None => (resume, None),
    };
    let start = Cursor {
        after,
        skip_until,
        first: true,
        done: false,
    };
    let service = state.service.clone();
    let query = std::sync::Arc::new(query);
    let pages = stream::unfold(start, move |cursor| {
        let (service, tenant, query) = (service.clone(), tenant.clone(), query.clone());
        async move {
            if cursor.done {
                return None;
            }
            let written = tokio::task::spawn_blocking(move || {
                write_page(&service, &tenant, what, format, &query, cursor)
            })
            .await;
            match written {
                Ok(Ok((bytes, next))) => Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), next)),
                Ok(Err(error)) => {
                    tracing::warn!(error = %error.message, "an export stopped");
                    Some((
                        Err(std::io::Error::other(error.message)),
                        Cursor::finished(),
                    ))
                }
                Err(error) => Some((
                    Err(std::io::Error::other(error.to_string())),
                    Cursor::finished(),
                )),
            }
        }
    });
    let content_type = match format {
        Format::Ndjson => "application/x-ndjson",
        Format::Csv => "text/csv; charset=utf-8",
    };
    let mut response = Body::from_stream(pages).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// One page of the export, written out, and where the next goes on from.
fn write_page(
    service: &Service,
    tenant: &TenantRecord,
    what: What,
    format: Format,
    query: &ExportQuery,
    cursor: Cursor,
) -> Result<(Vec<u8>, Cursor), ServiceError> {
    let policy = tenant.policy();
    let mut out = Vec::new();
    if cursor.first && format == Format::Csv {
        out.extend_from_slice(header_row(what).as_bytes());
    }
    let mut skip_until = cursor.skip_until;
    let (rows, next): (Vec<Value>, Option<String>) = match what {
        What::Events => {
            let (mut events, next) = events_page(service, tenant, query, cursor.after.as_deref())?;
            if let Some(resume) = &skip_until {
                match events.iter().position(|event| event.id == *resume) {
                    Some(at) => {
                        events.drain(..=at);
                        skip_until = None;
                    }
                    None => events.clear(),
                }
            }
            // Written straight from the stored events: no JSON tree between.
            for event in &events {
                match format {
                    Format::Ndjson => write_json_line(&mut out, event)?,
                    Format::Csv => write_csv_row(&mut out, event_fields(event)),
                }
            }
            (Vec::new(), next)
        }
        What::Customers => {
            let page = service.queries.customers(
                &tenant.id,
                &crate::service::CustomerFilter::default(),
                cursor.after.as_deref(),
                PAGE,
            )?;
            let rows = page
                .items
                .iter()
                .map(|record| json!(views::customer(record, &policy)))
                .collect();
            (rows, page.next_cursor)
        }
        What::Ledger => ledger_page(service, tenant, cursor.after.as_deref())?,
    };
    for row in &rows {
        match format {
            Format::Ndjson => write_json_line(&mut out, row)?,
            Format::Csv => write_csv_row(&mut out, value_fields(what, row)),
        }
    }
    let done = next.is_none();
    Ok((
        out,
        Cursor {
            after: next,
            skip_until,
            first: false,
            done,
        },
    ))
}

fn events_page(
    service: &Service,
    tenant: &TenantRecord,
    query: &ExportQuery,
    after: Option<&str>,
) -> Result<(Vec<StoredEvent>, Option<String>), ServiceError> {
    let actions: Vec<&str> = query
        .action
        .as_deref()
        .map(|actions| {
            actions
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let keep = |event: &StoredEvent| {
        (actions.is_empty() || actions.contains(&event.action.as_str()))
            && query
                .channel
                .as_ref()
                .is_none_or(|channel| event.channel.as_ref() == Some(channel))
            && query
                .campaign
                .as_ref()
                .is_none_or(|campaign| event.campaign.as_ref() == Some(campaign))
            && query.from.is_none_or(|from| event.timestamp >= from)
            && query.to.is_none_or(|to| event.timestamp < to)
    };
    let page = match &query.customer {
        // One customer's history, by time: its own index, not a scan of the tenant.
        Some(customer) => {
            let events = EventQuery {
                actions: (!actions.is_empty())
                    .then(|| actions.iter().map(|action| (*action).to_owned()).collect()),
                channel: query.channel.clone(),
                campaign: query.campaign.clone(),
                from: query.from,
                to: query.to,
                newest_first: false,
                limit: PAGE,
                cursor: after.map(str::to_owned),
            };
            service
                .queries
                .customer_events(&tenant.id, customer, &events)?
        }
        None => service.queries.events(&tenant.id, after, PAGE, &keep)?,
    };
    Ok((page.items, page.next_cursor))
}

/// The ledger of a page of customers, each whole.
fn ledger_page(
    service: &Service,
    tenant: &TenantRecord,
    after: Option<&str>,
) -> Result<(Vec<Value>, Option<String>), ServiceError> {
    let customers = service.queries.customers(
        &tenant.id,
        &crate::service::CustomerFilter::default(),
        after,
        50,
    )?;
    let mut rows = Vec::new();
    for record in &customers.items {
        let mut cursor: Option<String> = None;
        loop {
            let page =
                service
                    .queries
                    .ledger(&tenant.id, &record.customer.id, PAGE, cursor.as_deref())?;
            for line in &page.items {
                let mut row = views::ledger_line(line);
                if let Value::Object(fields) = &mut row {
                    fields.insert("customer".to_owned(), json!(record.customer.id));
                }
                rows.push(row);
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok((rows, customers.next_cursor))
}

const EVENT_COLUMNS: [&str; 9] = [
    "id",
    "action",
    "customer",
    "timestamp",
    "received_at",
    "points",
    "source",
    "label",
    "data",
];
const CUSTOMER_COLUMNS: [&str; 10] = [
    "id",
    "balance",
    "pending",
    "lifetime",
    "tier",
    "member",
    "event_count",
    "created_at",
    "updated_at",
    "attributes",
];
const LEDGER_COLUMNS: [&str; 12] = [
    "customer",
    "seq",
    "event_id",
    "plugin",
    "kind",
    "amount",
    "held",
    "balance_after",
    "pending_after",
    "lifetime_after",
    "at",
    "reason",
];

fn columns(what: What) -> &'static [&'static str] {
    match what {
        What::Events => &EVENT_COLUMNS,
        What::Customers => &CUSTOMER_COLUMNS,
        What::Ledger => &LEDGER_COLUMNS,
    }
}

fn header_row(what: What) -> String {
    let mut row = columns(what).join(",");
    row.push('\n');
    row
}

/// One JSON object and a line break.
fn write_json_line(out: &mut Vec<u8>, row: &impl serde::Serialize) -> Result<(), ServiceError> {
    serde_json::to_writer(&mut *out, row)
        .map_err(|error| ServiceError::internal(format!("cannot write a row: {error}")))?;
    out.push(b'\n');
    Ok(())
}

/// An event's CSV fields, in [`EVENT_COLUMNS`]' order.
fn event_fields(event: &StoredEvent) -> impl Iterator<Item = Cow<'_, str>> {
    [
        Cow::Borrowed(event.id.as_str()),
        Cow::Borrowed(event.action.as_str()),
        Cow::Borrowed(event.customer.as_str()),
        Cow::Owned(event.timestamp.to_string()),
        Cow::Owned(event.received_at.to_string()),
        Cow::Owned(event.points.to_string()),
        Cow::Borrowed(event.source.as_str()),
        Cow::Borrowed(event.label.as_deref().unwrap_or_default()),
        Cow::Borrowed(event.data.get()),
    ]
    .into_iter()
}

/// A row's CSV fields by its columns; objects and arrays as their JSON.
fn value_fields(what: What, row: &Value) -> impl Iterator<Item = Cow<'_, str>> {
    columns(what).iter().map(move |name| {
        let value = match (what, *name) {
            (What::Customers, "balance" | "pending" | "lifetime") => &row["points"][*name],
            _ => row.get(*name).unwrap_or(&Value::Null),
        };
        match value {
            Value::Null => Cow::Borrowed(""),
            Value::String(text) => Cow::Borrowed(text.as_str()),
            other => Cow::Owned(other.to_string()),
        }
    })
}

/// One CSV row (RFC 4180: fields with a comma, quote or line break quoted, quotes doubled).
fn write_csv_row<'a>(out: &mut Vec<u8>, fields: impl Iterator<Item = Cow<'a, str>>) {
    for (index, field) in fields.enumerate() {
        if index > 0 {
            out.push(b',');
        }
        if field.contains([',', '"', '\n', '\r']) {
            out.push(b'"');
            out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(field.as_bytes());
        }
    }
    out.push(b'\n');
}
