//! The four reference plugins, built to wasm, run together through `evaluate_event_reporting` in the
//! order a tenant would give them (points, tiers, circular, engagement) on one customer's
//! journey through the interactions of the seed documents: an Antavo checkout with its
//! numbers as strings, Voyado repairs and recycling, a Sitecore swim, reviews, a referral,
//! and Antavo's corrections. The test plays the host's part: it carries the customer and
//! each plugin's state from one event to the next.
//!
//! Run: `cargo test -p tally-host --test pipeline_reference_plugins`

#![allow(
    clippy::expect_used,
    reason = "tests fail loudly on a broken expectation"
)]

use std::collections::HashMap;

use serde_json::{Value, json};
use tally_host::domain::records::{AppendEvent, CustomerRecord, OnError};
use tally_host::domain::{CustomerId, EventId, NewEvent, Policy, TenantId, new_account};
use tally_host::pipeline::{PluginCall, evaluate_event_reporting};
use tally_host::runtime::{Limits, Plugin, Runtime};
use tally_host::storage::RawJson;
use tally_plugin_wasm::REFERENCE;
use tally_sdk::Timestamp;

struct Journey {
    plugins: Vec<(&'static str, Plugin)>,
    states: HashMap<&'static str, RawJson>,
    account: CustomerRecord,
    clock: i64,
    next_id: u32,
}

impl Journey {
    fn new(runtime: &Runtime) -> Journey {
        let plugins = REFERENCE
            .iter()
            .map(|plugin| {
                (
                    plugin.name,
                    runtime.load(plugin.wasm).expect("a reference plugin loads"),
                )
            })
            .collect();
        let customer = CustomerId::parse("374397439743").expect("a customer id");
        let clock = 1_795_428_000;
        Journey {
            plugins,
            states: HashMap::new(),
            account: new_account(&customer, Timestamp::from_unix_seconds(clock)),
            clock,
            next_id: 0,
        }
    }

    /// Posts one event: runs every plugin, keeps what the host would keep.
    fn post(&mut self, action: &str, data: Value) -> AppendEvent {
        self.clock += 3600;
        self.next_id += 1;
        let timestamp = Timestamp::from_unix_seconds(self.clock);
        let event = NewEvent {
            tenant: TenantId::parse("acme").expect("a tenant id"),
            id: EventId::parse(format!("event-{}", self.next_id)).expect("an event id"),
            action: action.to_owned(),
            label: None,
            customer: CustomerId::parse(self.account.customer.id.as_str()).expect("an id"),
            timestamp,
            source: "api".to_owned(),
            ip_address: None,
            user_agent: None,
            data: RawJson::from_value(&data),
            received_at: timestamp,
            contact_card: Vec::new(),
            due: None,
            interaction: Default::default(),
        };
        let calls: Vec<PluginCall<'_>> = self
            .plugins
            .iter()
            .map(|(name, plugin)| PluginCall {
                name,
                version: 1,
                plugin: Ok(plugin),
                config: None,
                state: self.states.get(name),
                on_error: OnError::Skip,
            })
            .collect();
        let evaluation =
            evaluate_event_reporting(Policy::default(), &event, &self.account, &calls, |_, _| {})
                .expect("a readable event");
        for (name, result) in self
            .plugins
            .iter()
            .map(|(name, _)| *name)
            .zip(&evaluation.runs.results)
        {
            let decision = result
                .outcome
                .as_ref()
                .unwrap_or_else(|error| panic!("{name} failed on {action}: {error}"));
            if let Some(state) = &decision.state {
                self.states.insert(name, state.clone());
            }
        }
        let append = evaluation.applied.expect("no plugin rejects");
        self.account = append.customer.clone();
        append
    }

    fn customer(&self) -> &tally_sdk::Customer {
        &self.account.customer
    }
}

fn trigger_names(append: &AppendEvent) -> Vec<&str> {
    append
        .event
        .outcome
        .triggers
        .iter()
        .map(|trigger| trigger.name.as_str())
        .collect()
}

#[test]
fn a_customer_journey_through_every_reference_plugin() {
    let runtime = Runtime::new(Limits::default()).expect("the engine starts");
    let mut journey = Journey::new(&runtime);

    // Antavo's checkout as it stands: "total": "200", quantities and prices as strings.
    let checkout = journey.post(
        "checkout",
        json!({"total": "200", "transaction_id": "5475-4343-4343-4343-3333", "items": [{
            "transaction_id": "5475-4343-4343-4343-3333", "product_id": "UFA-8888-94394-EN/38/YELLOW",
            "product_name": "Yellow T-Shirt", "product_url": "https://example.com/yellow-t-shirt",
            "quantity": "1", "subtotal": "200", "price": "200", "product_category": "t-shirts"}]}),
    );
    assert_eq!(checkout.event.points, 200);
    assert_eq!(
        journey.customer().tier.as_deref(),
        Some("bronze"),
        "tiers ran after points and placed the customer"
    );

    // Voyado circular-economy interactions.
    let free_repair = journey.post(
        "repair",
        json!({"isFreeRepair": "true", "productModel": "Parka", "storeId": "17"}),
    );
    let paid_repair = journey.post(
        "repair",
        json!({"isFreeRepair": false, "productModel": "Parka"}),
    );
    assert!(
        free_repair.event.points < paid_repair.event.points,
        "a free repair earns less"
    );
    let recycled = journey.post(
        "recycled",
        json!({"dropOffPoint": "Store 17", "quantity": "3", "type": 2}),
    );
    assert!(recycled.event.points > 0);

    // Sitecore's swim app: a personal record earns a bonus and a trigger.
    let swim = journey.post("swim", json!({"distance": 1500, "duration": 1800, "pace": "2:00", "club": "USMS", "personalRecord": true}));
    assert!(
        trigger_names(&swim).contains(&"PersonalRecord"),
        "{:?}",
        trigger_names(&swim)
    );
    assert!(trigger_names(&swim).contains(&"EngagementScored"));

    let review = journey.post("review", json!({"rating": 5, "text": "Great"}));
    assert!(review.event.points > 0);
    let referral = journey.post(
        "referral",
        json!({"referred_email": "friend@example.com", "referred_first_name": "Ada"}),
    );
    assert!(trigger_names(&referral).contains(&"ReferralCompleted"));

    // A big checkout takes the customer over silver and gold: TierEarned with old and new tier.
    let big = journey.post("checkout", json!({"transaction_id": "T-2", "total": 2000}));
    let earned = big
        .event
        .outcome
        .triggers
        .iter()
        .find(|trigger| trigger.name == "TierEarned")
        .expect("a tier was earned");
    assert_eq!(earned.data.to_value()["new_tier"]["name"], "gold");
    assert_eq!(journey.customer().tier.as_deref(), Some("gold"));

    // Antavo's corrections: the return reverses exactly what T-2 earned, and lifetime points
    // drop with it, so the customer loses gold.
    let lifetime_before = journey.customer().points.lifetime;
    let reject = journey.post("checkout_reject", json!({"transaction_id": "T-2"}));
    assert_eq!(reject.event.points, -2000);
    assert_eq!(journey.customer().points.lifetime, lifetime_before - 2000);
    assert!(
        trigger_names(&reject).contains(&"TierLost"),
        "{:?}",
        trigger_names(&reject)
    );
    assert_ne!(journey.customer().tier.as_deref(), Some("gold"));

    // Rejecting it again awards nothing twice.
    let again = journey.post("checkout_reject", json!({"transaction_id": "T-2"}));
    assert_eq!(again.event.points, 0);

    assert_eq!(
        journey.customer().points.balance,
        journey.customer().points.lifetime,
        "nothing was spent"
    );
}

#[test]
fn replaying_history_gives_the_same_decisions() {
    let runtime = Runtime::new(Limits::default()).expect("the engine starts");
    let events = [
        (
            "checkout",
            json!({"transaction_id": "A", "total": "120.50"}),
        ),
        ("recycled", json!({"quantity": 2, "type": 1})),
        ("repair", json!({"isFreeRepair": true})),
        ("recycled", json!({"quantity": 1, "type": 3})),
        ("repair", json!({})),
        (
            "preownedProduct",
            json!({"storeDropOff": true, "reimbursement": "15.00"}),
        ),
        ("swim", json!({"distance": 800, "personal_record": false})),
    ];
    let play = || {
        let mut journey = Journey::new(&runtime);
        events
            .iter()
            .map(|(action, data)| journey.post(action, data.clone()).event.outcome)
            .collect::<Vec<_>>()
    };
    let (first, second) = (play(), play());
    assert_eq!(first, second);
    // The fifth circular action earned a coupon whose code comes from the event's seed.
    let coupons: Vec<_> = first.iter().flat_map(|outcome| &outcome.perks).collect();
    assert_eq!(coupons.len(), 1, "{coupons:?}");
}
