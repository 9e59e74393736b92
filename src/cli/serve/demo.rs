//! `tally serve --demo`: sets up tenant `demo` with the reference plugins and the sample
//! event types, posts the sample events of `examples/events/`, prints what each customer
//! earned and the curl commands to try next.
//!
//! It runs again on every `--demo` start without duplicating anything: event types are
//! replaced by the same documents, a plugin whose active version has the same bytes is left
//! as it is, and the sample events have fixed ids, so posting them again only replays them.
//! The demo tenant gets a fresh key each time (keys are stored hashed, so the old one cannot
//! be shown again).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use tally_host::schema::parse_jsonc;
use tally_host::service::{NewTenant, Origin, PluginPatch, Service, ServiceError};
use tally_host::storage::TenantRecord;
use tally_plugin_wasm::{CIRCULAR, ENGAGEMENT, POINTS, Plugin, TIERS};

/// The demo tenant's id.
pub const TENANT: &str = "demo";

/// The reference plugins with their priorities: tiers runs after points, so that it sees
/// the points a checkout just earned.
const PLUGINS: [(Plugin, i32); 4] = [(POINTS, 10), (TIERS, 20), (CIRCULAR, 30), (ENGAGEMENT, 40)];

/// The event types of `examples/event-types/`: Voyado's interaction schemas as published
/// (with their `//` comments), and swim, review and referral.
const EVENT_TYPES: [&str; 8] = [
    include_str!("../../../examples/event-types/repair.json"),
    include_str!("../../../examples/event-types/recycled.json"),
    include_str!("../../../examples/event-types/preownedProduct.json"),
    include_str!("../../../examples/event-types/wholeSalePurchase.json"),
    include_str!("../../../examples/event-types/wishlist.json"),
    include_str!("../../../examples/event-types/swim.json"),
    include_str!("../../../examples/event-types/review.json"),
    include_str!("../../../examples/event-types/referral.json"),
];

/// The sample events of `examples/events/`, the Antavo checkout first.
const EVENTS: [&str; 9] = [
    include_str!("../../../examples/events/01-antavo-checkout.json"),
    include_str!("../../../examples/events/02-checkout-ada.json"),
    include_str!("../../../examples/events/03-repair-ada.json"),
    include_str!("../../../examples/events/04-recycled.json"),
    include_str!("../../../examples/events/05-preowned-grace.json"),
    include_str!("../../../examples/events/06-swim-grace.json"),
    include_str!("../../../examples/events/07-review-grace.json"),
    include_str!("../../../examples/events/08-referral-ada.json"),
    include_str!("../../../examples/events/09-wishlist-grace.json"),
];

/// Sets the demo up, posts the sample events and prints the results and what to try next.
pub async fn run(service: &Arc<Service>, address: SocketAddr) -> Result<(), String> {
    let setup_service = service.clone();
    let (tenant, key) = tokio::task::spawn_blocking(move || set_up(&setup_service))
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| format!("setting up the demo tenant failed: {}", error.message))?;

    let mut inputs = Vec::with_capacity(EVENTS.len());
    for text in EVENTS {
        inputs.push(parse_jsonc(text).map_err(|error| format!("a sample event: {error}"))?);
    }
    let prepare_service = service.clone();
    let prepare_tenant = tenant.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let origin = Origin {
            source: "demo".to_owned(),
            ip_address: None,
            user_agent: Some("tally serve --demo".to_owned()),
        };
        prepare_service
            .ingest
            .prepare_events(&prepare_tenant, inputs, &origin)
    })
    .await
    .map_err(|error| error.to_string())?
    .map_err(|error| error.message)?;
    let answers = service.ingest.ingest_many(prepared).await;

    println!(
        "Demo tenant \"{TENANT}\": reference plugins points, tiers, circular and engagement; sample events:"
    );
    let mut customers = BTreeSet::new();
    for answer in &answers {
        match answer {
            Ok(ingested) => {
                let event = &ingested.event;
                customers.insert(event.customer.clone());
                let errors: Vec<String> = event
                    .outcome
                    .plugins
                    .iter()
                    .filter_map(|run| {
                        run.error
                            .as_ref()
                            .map(|error| format!("{} failed: {}", run.name, error.code))
                    })
                    .collect();
                println!(
                    "  {:<16} customer {:<13} {:>+6} points{}{}{}",
                    event.action,
                    event.customer,
                    event.points,
                    event
                        .outcome
                        .tier
                        .as_ref()
                        .map(|tier| format!(", tier {tier}"))
                        .unwrap_or_default(),
                    if ingested.replayed {
                        " (already posted)"
                    } else {
                        ""
                    },
                    if errors.is_empty() {
                        String::new()
                    } else {
                        format!(" [{}]", errors.join("; "))
                    },
                );
            }
            Err(error) => println!("  refused: {} ({})", error.message, error.code),
        }
    }

    println!();
    println!("Customers:");
    for id in &customers {
        let lookup_service = service.clone();
        let lookup = id.clone();
        let customer =
            tokio::task::spawn_blocking(move || lookup_service.queries.customer(TENANT, &lookup))
                .await
                .map_err(|error| error.to_string())?;
        match customer {
            Ok(record) => {
                let customer = &record.customer;
                println!(
                    "  {:<13} balance {:>6}  lifetime {:>6}  tier {:<10} perks {}",
                    id,
                    customer.points.balance,
                    customer.points.lifetime,
                    customer.tier.as_deref().unwrap_or("-"),
                    customer.perks.len()
                );
            }
            Err(error) => println!("  {id}: {}", error.message),
        }
    }

    print_next_steps(address, &key);
    Ok(())
}

/// Creates (or finds) the demo tenant with a fresh key, its event types and its plugins.
fn set_up(service: &Service) -> Result<(TenantRecord, String), ServiceError> {
    let (tenant, key) = match service.tenants.tenant(TENANT)? {
        Some(tenant) => {
            let key = service.tenants.rotate_tenant_key(TENANT)?;
            (tenant, key)
        }
        None => service.tenants.create_tenant(NewTenant {
            id: TENANT.to_owned(),
            name: Some("Demo brand".to_owned()),
            allow_untyped_events: false,
            allow_negative_balance: false,
        })?,
    };
    for text in EVENT_TYPES {
        service.catalog.put_event_type(TENANT, parse_jsonc(text)?)?;
    }
    for (plugin, priority) in PLUGINS {
        service
            .catalog
            .upload_plugin(TENANT, plugin.name, plugin.wasm)?;
        service.catalog.update_plugin(
            TENANT,
            plugin.name,
            PluginPatch {
                priority: Some(priority),
                ..PluginPatch::default()
            },
        )?;
    }
    Ok((tenant, key))
}

fn print_next_steps(address: SocketAddr, key: &str) {
    let base = format!("http://{address}");
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    println!();
    println!("Demo API key (shown once): {key}");
    println!();
    println!("Try next:");
    println!("  export TALLY_KEY={key}");
    println!("  curl -s {base}/v1/customers/ada -H \"Authorization: Bearer $TALLY_KEY\"");
    println!(
        "  curl -s '{base}/v1/customers/grace/events?order=newest&limit=5' -H \"Authorization: Bearer $TALLY_KEY\""
    );
    println!(
        "  curl -s {base}/v1/customers/374397439743/ledger -H \"Authorization: Bearer $TALLY_KEY\""
    );
    println!(
        "  curl -s {base}/v1/events -H \"Authorization: Bearer $TALLY_KEY\" -H 'Content-Type: application/json' \\"
    );
    println!(
        "       -d '{{\"customer\": \"ada\", \"action\": \"checkout\", \"data\": {{\"transaction_id\": \"A-1002\", \"total\": \"80\"}}}}'"
    );
    println!(
        "  curl -s {base}/v1/events -H \"Authorization: Bearer $TALLY_KEY\" -H 'Content-Type: application/x-www-form-urlencoded' \\"
    );
    println!("       --data @{examples}/events/antavo-checkout.form");
    println!("  curl -s {base}/v1/plugins -H \"Authorization: Bearer $TALLY_KEY\"");
    println!("  curl -s {base}/v1/event-types/repair -H \"Authorization: Bearer $TALLY_KEY\"");
    println!();
    println!("Routes: docs/api.md. Serving until Ctrl-C.");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn sample_documents_and_events_parse() {
        for text in EVENT_TYPES {
            tally_host::schema::parse_document(&parse_jsonc(text).unwrap()).unwrap();
        }
        for text in EVENTS {
            let event: Value = parse_jsonc(text).unwrap();
            assert!(
                event["id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("demo-"))
            );
        }
    }
}
