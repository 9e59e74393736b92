//! The redb store on a real file: round trips of every record, group-commit atomicity, a batch
//! reading its own writes, idempotency, reopening, paging and the ledger invariant.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

// Inside `mod storage` so that `cargo test -p tally-host storage` selects these tests too.
mod storage {
    use serde_json::{Value, json};
    use sha2::{Digest, Sha256};
    use tally_host::domain::{CustomerId, TenantId, new_account, points_after};
    use tally_host::storage::{
        AppendEvent, BatchRead, BatchTxn, EventOutcome, EventQuery, EventTypeRecord,
        NewLedgerEntry, NewTrigger, OnError, PluginErrorRecord, PluginRun, PluginStatus, RawJson,
        RedbStore, Store, StoreError, StoredEvent, TenantRecord,
    };
    use tally_sdk::{Perk, PointEntry, PointKind, Points, Timestamp, Trigger};
    use tempfile::TempDir;

    const T0: i64 = 1_790_000_000; // 2026-09-21

    fn raw(value: Value) -> RawJson {
        RawJson::from_value(&value)
    }

    fn open() -> (TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path().join("tally.redb")).unwrap();
        (dir, store)
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn tenant_record(id: &str) -> TenantRecord {
        TenantRecord {
            id: TenantId::parse(id).unwrap(),
            name: format!("{id} inc."),
            created_at: at("2026-01-01T00:00:00Z"),
            allow_untyped_events: false,
            allow_negative_balance: false,
            points_expiry: Default::default(),
            schedule: Default::default(),
            future_tolerance_seconds: 300,
            membership_required: false,
            segment: Default::default(),
            customer_schema: None,
        }
    }

    fn key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    fn with_tenants(ids: &[&str]) -> (TempDir, RedbStore) {
        let (dir, store) = open();
        for (n, id) in (1..).zip(ids) {
            store.create_tenant(&tenant_record(id), key(n)).unwrap();
        }
        (dir, store)
    }

    /// What the pipeline does for one event, reduced to its storage side: read the customer as
    /// the batch has left them, apply the decision, count the event.
    fn evaluate(
        txn: &dyn BatchTxn,
        tenant: &str,
        id: &str,
        customer: &str,
        action: &str,
        at: i64,
        points: &[PointEntry],
    ) -> AppendEvent {
        let received_at = Timestamp::from_unix_seconds(at + 5);
        let mut record = txn
            .customer(tenant, customer)
            .unwrap()
            .unwrap_or_else(|| new_account(&CustomerId::parse(customer).unwrap(), received_at));
        let ledger: Vec<NewLedgerEntry> = points
            .iter()
            .map(|entry| NewLedgerEntry {
                plugin: "points".to_owned(),
                entry: entry.clone(),
                held: 0,
            })
            .collect();
        record.customer.points = points_after(record.customer.points, &ledger)
            .last()
            .copied()
            .unwrap_or(record.customer.points);
        record.event_count += 1;
        record.updated_at = received_at;
        let timestamp = Timestamp::from_unix_seconds(at);
        AppendEvent {
            tenant: tenant.to_owned(),
            event: StoredEvent {
                seq: 0,
                id: id.to_owned(),
                action: action.to_owned(),
                label: None,
                date: timestamp.date_string(),
                timestamp,
                customer: customer.to_owned(),
                points: points.iter().map(|p| p.amount).sum(),
                source: "api".to_owned(),
                ip_address: None,
                user_agent: None,
                data: raw(json!({"id": id})),
                received_at,
                channel: None,
                campaign: None,
                goals: Vec::new(),
                engagement_value: None,
                outcome: EventOutcome {
                    points: points.to_vec(),
                    ..EventOutcome::default()
                },
            },
            customer: record,
            ledger,
            plugin_states: Vec::new(),
            triggers: Vec::new(),
            reward: None,
            erase: false,
            merged: None,
            snapshot: None,
        }
    }

    fn earn(amount: i64) -> PointEntry {
        PointEntry::new(amount, "earned").with_kind(PointKind::Earn)
    }

    fn spend(amount: i64) -> PointEntry {
        PointEntry::new(-amount, "spent").with_kind(PointKind::Spend)
    }

    /// Appends one event in a batch of its own.
    fn post(
        store: &RedbStore,
        tenant: &str,
        id: &str,
        customer: &str,
        action: &str,
        at: i64,
        points: &[PointEntry],
    ) -> Result<StoredEvent, StoreError> {
        let mut stored = None;
        store.write_batch(&mut |txn: &mut dyn BatchTxn| {
            let append = evaluate(txn, tenant, id, customer, action, at, points);
            stored = Some(txn.append(append)?.event);
            Ok(())
        })?;
        Ok(stored.unwrap())
    }

    fn all_events(store: &RedbStore, tenant: &str, customer: &str) -> Vec<StoredEvent> {
        let query = EventQuery {
            limit: usize::MAX,
            ..EventQuery::default()
        };
        let page = store.customer_events(tenant, customer, &query).unwrap();
        assert_eq!(page.next_cursor, None);
        page.items
    }

    fn assert_ledger_matches_balance(store: &RedbStore, tenant: &str, customer: &str) -> Points {
        let record = store.customer(tenant, customer).unwrap().unwrap();
        let ledger = store.ledger(tenant, customer, usize::MAX, None).unwrap();
        let mut points = Points::default();
        for entry in &ledger.items {
            points.balance += entry.amount;
            if entry.kind != PointKind::Spend {
                points.lifetime += entry.amount;
            }
            assert_eq!(
                (entry.balance_after, entry.lifetime_after),
                (points.balance, points.lifetime),
                "ledger entry {} of {customer}",
                entry.seq
            );
        }
        assert_eq!(record.customer.points, points, "customer {customer}");
        points
    }

    #[test]
    fn tenants_and_keys_round_trip() {
        let (_dir, store) = open();
        assert_eq!(store.tenant("acme").unwrap(), None);
        assert_eq!(store.admin_key_hash().unwrap(), None);

        let acme = tenant_record("acme");
        store.create_tenant(&acme, key(1)).unwrap();
        store
            .create_tenant(&tenant_record("acme2"), key(2))
            .unwrap();
        assert_eq!(store.tenant("acme").unwrap(), Some(acme.clone()));
        assert_eq!(
            store.tenant_by_key_hash(key(1)).unwrap(),
            Some(acme.clone())
        );
        assert_eq!(store.tenant_by_key_hash(key(9)).unwrap(), None);
        let ids: Vec<String> = store
            .tenants()
            .unwrap()
            .into_iter()
            .map(|t| t.id.to_string())
            .collect();
        assert_eq!(ids, ["acme", "acme2"]);

        let error = store.create_tenant(&acme, key(3)).unwrap_err();
        assert!(matches!(error, StoreError::Conflict(_)), "{error}");
        assert_eq!(error.to_string(), "tenant acme already exists");
        let error = store
            .create_tenant(&tenant_record("other"), key(2))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "that API key is already the key of tenant acme2"
        );
        assert_eq!(store.tenant("other").unwrap(), None, "nothing half-created");

        let updated = TenantRecord {
            name: "Acme Outdoor".to_owned(),
            allow_untyped_events: true,
            ..acme.clone()
        };
        store.update_tenant(&updated).unwrap();
        assert_eq!(store.tenant("acme").unwrap(), Some(updated.clone()));
        let error = store.update_tenant(&tenant_record("ghost")).unwrap_err();
        assert!(matches!(error, StoreError::NotFound(_)), "{error}");

        // Rotating a key retires the old one.
        store.set_tenant_key_hash("acme", key(7)).unwrap();
        assert_eq!(store.tenant_by_key_hash(key(1)).unwrap(), None);
        assert_eq!(store.tenant_by_key_hash(key(7)).unwrap(), Some(updated));
        let error = store.set_tenant_key_hash("acme", key(2)).unwrap_err();
        assert!(matches!(error, StoreError::Conflict(_)), "{error}");
        let error = store.set_tenant_key_hash("ghost", key(8)).unwrap_err();
        assert!(matches!(error, StoreError::NotFound(_)), "{error}");

        store.set_admin_key_hash(key(42)).unwrap();
        assert_eq!(store.admin_key_hash().unwrap(), Some(key(42)));
    }

    #[test]
    fn event_types_round_trip_per_tenant() {
        let (_dir, store) = with_tenants(&["acme", "acme2"]);
        let checkout = EventTypeRecord {
            id: "checkout".to_owned(),
            display_name: "Checkout".to_owned(),
            document: json!({"type": "object", "properties": {"total": {"type": "number"}}}),
            created_at: at("2026-01-02T00:00:00Z"),
        };
        let repair = EventTypeRecord {
            id: "repair".to_owned(),
            display_name: "Repair".to_owned(),
            document: json!({"type": "object"}),
            created_at: at("2026-01-02T00:00:00Z"),
        };
        store.put_event_type("acme", &repair).unwrap();
        store.put_event_type("acme", &checkout).unwrap();
        store.put_event_type("acme2", &checkout).unwrap();
        assert_eq!(
            store.event_type("acme", "checkout").unwrap(),
            Some(checkout.clone())
        );
        assert_eq!(store.event_type("acme", "swim").unwrap(), None);
        assert_eq!(
            store.event_types("acme").unwrap(),
            [checkout.clone(), repair.clone()]
        );
        assert_eq!(
            store.event_types("acme2").unwrap(),
            std::slice::from_ref(&checkout)
        );
        assert_eq!(store.event_types("acm").unwrap(), []);

        let replaced = EventTypeRecord {
            display_name: "Purchase".to_owned(),
            ..checkout.clone()
        };
        store.put_event_type("acme", &replaced).unwrap();
        assert_eq!(store.event_types("acme").unwrap(), [replaced, repair]);

        let error = store.put_event_type("ghost", &checkout).unwrap_err();
        assert_eq!(error.to_string(), "tenant ghost does not exist");
    }

    #[test]
    fn plugins_keep_every_version() {
        let (_dir, store) = with_tenants(&["acme", "acme2"]);
        let v1 = b"\0asm version one".as_slice();
        let v2 = b"\0asm version two, longer".as_slice();
        let sha = |wasm: &[u8]| hex::encode(Sha256::digest(wasm));

        let first = store
            .add_plugin_version("acme", "points", v1, &sha(v1), at("2026-01-01T00:00:00Z"))
            .unwrap();
        assert_eq!(first.active_version, 1);
        assert!(first.enabled);
        assert_eq!(first.actions, None);
        assert_eq!(first.priority, 0);
        assert_eq!(first.on_error, OnError::Skip);
        assert_eq!(first.versions[0].size, 16);
        assert_eq!(first.versions[0].sha256, sha(v1));

        // Uppercase hex is the same hash.
        let second = store
            .add_plugin_version(
                "acme",
                "points",
                v2,
                &sha(v2).to_uppercase(),
                at("2026-01-02T00:00:00Z"),
            )
            .unwrap();
        assert_eq!(second.active_version, 2);
        assert_eq!(second.versions.len(), 2);
        assert_eq!(second.versions[1].sha256, sha(v2));
        assert_eq!(
            store.plugin("acme", "points").unwrap(),
            Some(second.clone())
        );
        assert_eq!(
            store.plugin_wasm("acme", "points", 1).unwrap().as_deref(),
            Some(v1)
        );
        assert_eq!(
            store.plugin_wasm("acme", "points", 2).unwrap().as_deref(),
            Some(v2)
        );
        assert_eq!(store.plugin_wasm("acme", "points", 3).unwrap(), None);
        assert_eq!(store.plugin_wasm("acme2", "points", 1).unwrap(), None);

        let error = store
            .add_plugin_version("acme", "points", v1, &sha(v2), at("2026-01-03T00:00:00Z"))
            .unwrap_err();
        assert!(matches!(error, StoreError::Invalid(_)), "{error}");
        assert!(error.to_string().contains("16-byte module"), "{error}");
        assert_eq!(
            store
                .plugin("acme", "points")
                .unwrap()
                .unwrap()
                .versions
                .len(),
            2
        );
        let error = store
            .add_plugin_version("ghost", "points", v1, &sha(v1), at("2026-01-03T00:00:00Z"))
            .unwrap_err();
        assert!(matches!(error, StoreError::NotFound(_)), "{error}");

        // Settings change by update; versions do not.
        let mut settings = second.clone();
        settings.active_version = 1;
        settings.config = json!({"rate": 0.1});
        settings.actions = Some(vec!["checkout".to_owned()]);
        settings.priority = 5;
        settings.enabled = false;
        settings.on_error = OnError::Reject;
        store.update_plugin("acme", &settings).unwrap();
        assert_eq!(
            store.plugin("acme", "points").unwrap(),
            Some(settings.clone())
        );

        let mut bad = settings.clone();
        bad.active_version = 3;
        let error = store.update_plugin("acme", &bad).unwrap_err();
        assert_eq!(
            error.to_string(),
            "plugin points of tenant acme has no version 3; it has versions 1 to 2"
        );
        let mut bad = settings.clone();
        bad.versions.pop();
        let error = store.update_plugin("acme", &bad).unwrap_err();
        assert!(matches!(error, StoreError::Invalid(_)), "{error}");
        let mut ghost = settings.clone();
        ghost.name = "ghost".to_owned();
        let error = store.update_plugin("acme", &ghost).unwrap_err();
        assert!(matches!(error, StoreError::NotFound(_)), "{error}");

        // Listing order is the run order: priority, then name.
        for (name, priority) in [("tiers", 5), ("alpha", 9), ("engagement", -1)] {
            let mut record = store
                .add_plugin_version("acme", name, v1, &sha(v1), at("2026-01-04T00:00:00Z"))
                .unwrap();
            record.priority = priority;
            store.update_plugin("acme", &record).unwrap();
        }
        store
            .add_plugin_version("acme2", "zeta", v1, &sha(v1), at("2026-01-04T00:00:00Z"))
            .unwrap();
        let order: Vec<(String, i32)> = store
            .plugins("acme")
            .unwrap()
            .into_iter()
            .map(|p| (p.name, p.priority))
            .collect();
        assert_eq!(
            order,
            [
                ("engagement".to_owned(), -1),
                ("points".to_owned(), 5),
                ("tiers".to_owned(), 5),
                ("alpha".to_owned(), 9)
            ]
        );
        assert_eq!(store.plugins("acme2").unwrap().len(), 1);
    }

    #[test]
    fn an_appended_event_round_trips_with_everything_it_changed() {
        let (_dir, store) = with_tenants(&["acme"]);
        let mut stored = None;
        store
            .write_batch(&mut |txn: &mut dyn BatchTxn| {
                let points = [
                    earn(120).expiring(Timestamp::from_unix_seconds(T0 + 86_400 * 365)),
                    spend(20),
                ];
                let mut append = evaluate(txn, "acme", "e1", "c1", "checkout", T0, &points);
                append.event.label = Some("Checkout".to_owned());
                append.event.ip_address = Some("192.0.2.7".to_owned());
                append.event.user_agent = Some("pos/1.0".to_owned());
                append.event.outcome.perks = vec![Perk::new("coupon", "WELCOME10")];
                append.event.outcome.tier = Some("silver".to_owned());
                append.event.outcome.triggers = vec![Trigger {
                    name: "TierEarned".to_owned(),
                    data: RawJson::from_value(&json!({"tier": "silver"})),
                }];
                append.event.outcome.plugins = vec![
                    PluginRun {
                        name: "points".to_owned(),
                        version: 2,
                        status: PluginStatus::Ok,
                        error: None,
                    },
                    PluginRun {
                        name: "tiers".to_owned(),
                        version: 1,
                        status: PluginStatus::Error,
                        error: Some(PluginErrorRecord {
                            code: "out_of_fuel".to_owned(),
                            message: "ran out of fuel after 10000000 instructions".to_owned(),
                        }),
                    },
                ];
                append.customer.customer.tier = Some("silver".to_owned());
                append.customer.customer.perks = vec![Perk::new("coupon", "WELCOME10")];
                append
                    .customer
                    .customer
                    .attributes
                    .insert("email".to_owned(), json!("ada@example.com"));
                append.customer.contact_card.insert(
                    "email".to_owned(),
                    json!({"value": "ada@example.com", "display_name": "E-mail",
                       "event_id": "e1", "at": "2026-09-21T00:00:00Z"}),
                );
                append.plugin_states = vec![
                    ("points".to_owned(), Some(raw(json!({"purchases": 1})))),
                    ("tiers".to_owned(), None),
                ];
                append.triggers = vec![
                    NewTrigger {
                        plugin: "tiers".to_owned(),
                        trigger: Trigger {
                            name: "TierEarned".to_owned(),
                            data: RawJson::from_value(&json!({"tier": "silver"})),
                        },
                    },
                    NewTrigger {
                        plugin: "points".to_owned(),
                        trigger: Trigger {
                            name: "CouponAwarded".to_owned(),
                            data: RawJson::default(),
                        },
                    },
                ];
                let expected_customer = append.customer.clone();
                let mut expected_event = append.event.clone();
                let event = txn.append(append)?.event;
                expected_event.seq = 1;
                assert_eq!(event, expected_event);
                assert_eq!(txn.event("acme", "e1")?, Some(expected_event));
                assert_eq!(txn.customer("acme", "c1")?, Some(expected_customer.clone()));
                stored = Some((event, expected_customer));
                Ok(())
            })
            .unwrap();
        let (event, customer) = stored.unwrap();
        assert_eq!(store.event("acme", "e1").unwrap(), Some(event.clone()));
        assert_eq!(store.event("acme", "e2").unwrap(), None);
        assert_eq!(store.customer("acme", "c1").unwrap(), Some(customer));
        assert_eq!(store.customer("acme", "c2").unwrap(), None);
        assert_eq!(all_events(&store, "acme", "c1"), [event]);

        let ledger = store.ledger("acme", "c1", 10, None).unwrap();
        assert_eq!(ledger.next_cursor, None);
        let entries: Vec<_> = ledger
            .items
            .iter()
            .map(|e| {
                (
                    e.seq,
                    e.event_id.as_str(),
                    e.plugin.as_str(),
                    e.amount,
                    e.kind,
                    e.reason.as_str(),
                    e.expires_at.map(|at| at.to_string()),
                    e.balance_after,
                    e.lifetime_after,
                    e.at.to_string(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                (
                    1,
                    "e1",
                    "points",
                    120,
                    PointKind::Earn,
                    "earned",
                    Some("2027-09-21T14:13:20Z".to_owned()),
                    120,
                    120,
                    "2026-09-21T14:13:20Z".to_owned()
                ),
                (
                    2,
                    "e1",
                    "points",
                    -20,
                    PointKind::Spend,
                    "spent",
                    None,
                    100,
                    120,
                    "2026-09-21T14:13:20Z".to_owned()
                ),
            ]
        );

        let outbox = store.outbox("acme", 0, 10).unwrap();
        let names: Vec<_> = outbox
            .iter()
            .map(|t| {
                (
                    t.seq,
                    t.event_id.as_str(),
                    t.customer.as_str(),
                    t.plugin.as_str(),
                    t.name.as_str(),
                    t.data.to_value(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                (
                    1,
                    "e1",
                    "c1",
                    "tiers",
                    "TierEarned",
                    json!({"tier": "silver"})
                ),
                (2, "e1", "c1", "points", "CouponAwarded", Value::Null),
            ]
        );
        assert_eq!(store.outbox("acme", 1, 10).unwrap(), outbox[1..]);
        assert_eq!(store.outbox("acme", 0, 1).unwrap(), outbox[..1]);
        assert_eq!(store.outbox("acme", u64::MAX, 10).unwrap(), []);
        assert_eq!(store.outbox("acme2", 0, 10).unwrap(), []);

        store
            .write_batch(&mut |txn: &mut dyn BatchTxn| {
                assert_eq!(
                    txn.plugin_state("acme", "points", "c1")?,
                    Some(raw(json!({"purchases": 1})))
                );
                assert_eq!(txn.plugin_state("acme", "tiers", "c1")?, None);
                assert_eq!(txn.plugin_state("acme", "points", "c2")?, None);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn a_batch_that_fails_writes_nothing() {
        let (_dir, store) = with_tenants(&["acme"]);
        let error = store
            .write_batch(&mut |txn: &mut dyn BatchTxn| {
                for (n, customer) in [(1, "c1"), (2, "c1"), (3, "c2")] {
                    let mut append = evaluate(
                        txn,
                        "acme",
                        &format!("e{n}"),
                        customer,
                        "checkout",
                        T0 + n,
                        &[earn(10)],
                    );
                    append.plugin_states = vec![("points".to_owned(), Some(raw(json!(n))))];
                    append.triggers = vec![NewTrigger {
                        plugin: "points".to_owned(),
                        trigger: Trigger {
                            name: "Earned".to_owned(),
                            data: RawJson::default(),
                        },
                    }];
                    txn.append(append)?;
                }
                Err(StoreError::Invalid("the request was cancelled".to_owned()))
            })
            .unwrap_err();
        assert_eq!(error.to_string(), "the request was cancelled");
        for n in 1..=3 {
            assert_eq!(store.event("acme", &format!("e{n}")).unwrap(), None);
        }
        for customer in ["c1", "c2"] {
            assert_eq!(store.customer("acme", customer).unwrap(), None);
            assert_eq!(all_events(&store, "acme", customer), []);
            assert_eq!(store.ledger("acme", customer, 10, None).unwrap().items, []);
        }
        assert_eq!(store.outbox("acme", 0, 10).unwrap(), []);
        store
            .write_batch(&mut |txn: &mut dyn BatchTxn| {
                assert_eq!(txn.plugin_state("acme", "points", "c1")?, None);
                Ok(())
            })
            .unwrap();

        // The sequences were rolled back too: the next event is the first.
        let event = post(&store, "acme", "e1", "c1", "checkout", T0, &[earn(10)]).unwrap();
        assert_eq!(event.seq, 1);
        assert_eq!(
            store.ledger("acme", "c1", 10, None).unwrap().items[0].seq,
            1
        );
    }

    #[test]
    fn a_batch_sees_its_own_writes() {
        let (_dir, store) = with_tenants(&["acme"]);
        post(&store, "acme", "e0", "c1", "signup", T0, &[earn(5)]).unwrap();
        store
            .write_batch(&mut |txn: &mut dyn BatchTxn| {
                let mut first =
                    evaluate(txn, "acme", "e1", "c1", "checkout", T0 + 10, &[earn(100)]);
                first.plugin_states = vec![("points".to_owned(), Some(raw(json!({"n": 1}))))];
                let appended_customer = first.customer.clone();
                let appended = txn.append(first)?;
                assert_eq!(appended.event.seq, 2);

                // The second event of the batch is evaluated on the first one's result, which
                // is the customer the append handed back.
                let before = txn.customer("acme", "c1")?.unwrap();
                assert_eq!(appended.customer, appended_customer);
                assert_eq!(before, appended.customer);
                assert_eq!(before.customer.points.balance, 105);
                assert_eq!(before.event_count, 2);
                assert_eq!(txn.event("acme", "e1")?.unwrap().seq, 2);
                assert_eq!(
                    txn.plugin_state("acme", "points", "c1")?,
                    Some(raw(json!({"n": 1})))
                );
                let mut second = evaluate(txn, "acme", "e2", "c1", "redeem", T0 + 20, &[spend(30)]);
                second.plugin_states = vec![("points".to_owned(), None)];
                assert_eq!(txn.append(second)?.event.seq, 3);
                assert_eq!(txn.plugin_state("acme", "points", "c1")?, None);
                let after = txn.customer("acme", "c1")?.unwrap();
                assert_eq!(
                    after.customer.points,
                    Points {
                        balance: 75,
                        lifetime: 105,
                        pending: 0,
                    }
                );
                Ok(())
            })
            .unwrap();
        let record = store.customer("acme", "c1").unwrap().unwrap();
        assert_eq!(record.event_count, 3);
        assert_eq!(
            assert_ledger_matches_balance(&store, "acme", "c1"),
            Points {
                balance: 75,
                lifetime: 105,
                pending: 0,
            }
        );
    }

    #[test]
    fn state_not_built_on_the_stored_state_is_refused() {
        let (_dir, store) = with_tenants(&["acme"]);
        store
            .write_batch(&mut |txn: &mut dyn BatchTxn| {
                // Both evaluated before either is appended: the second is built on a stale read.
                let first = evaluate(txn, "acme", "e1", "c1", "checkout", T0, &[earn(100)]);
                let stale = evaluate(txn, "acme", "e2", "c1", "checkout", T0 + 1, &[earn(50)]);
                txn.append(first)?;
                let error = txn.append(stale.clone()).unwrap_err();
                assert!(matches!(error, StoreError::Inconsistent(_)), "{error}");
                assert_eq!(
                    error.to_string(),
                    "inconsistent append refused: customer c1 of tenant acme has 1 events stored, \
                 so after event e2 the count must be 2, not 1"
                );

                // Right count, wrong points.
                let mut wrong = stale.clone();
                wrong.customer.event_count = 2;
                let error = txn.append(wrong).unwrap_err();
                assert_eq!(
                    error.to_string(),
                    "inconsistent append refused: customer c1 of tenant acme has balance 100, \
                 pending 0 and lifetime 100 stored; event e2's 1 ledger entries take them to \
                 balance 150, pending 0 and lifetime 150, but the new customer state says \
                 balance 50, pending 0 and lifetime 50"
                );

                let mut wrong_net =
                    evaluate(txn, "acme", "e2", "c1", "checkout", T0 + 1, &[earn(50)]);
                wrong_net.event.points = 49;
                let error = txn.append(wrong_net).unwrap_err();
                assert_eq!(
                    error.to_string(),
                    "inconsistent append refused: event e2 of tenant acme says it moved 49 points, \
                 but its 1 ledger entries sum to 50"
                );

                let mut wrong_customer =
                    evaluate(txn, "acme", "e2", "c1", "checkout", T0 + 1, &[earn(50)]);
                wrong_customer.customer.customer.id = "c2".to_owned();
                let error = txn.append(wrong_customer).unwrap_err();
                assert!(matches!(error, StoreError::Inconsistent(_)), "{error}");

                let mut no_tenant = evaluate(txn, "acme", "e2", "c1", "checkout", T0 + 1, &[]);
                no_tenant.tenant = "ghost".to_owned();
                let error = txn.append(no_tenant).unwrap_err();
                assert!(matches!(error, StoreError::NotFound(_)), "{error}");

                // Refused appends left nothing behind, so the batch goes on.
                let fresh = evaluate(txn, "acme", "e2", "c1", "checkout", T0 + 1, &[earn(50)]);
                assert_eq!(txn.append(fresh)?.event.seq, 2);
                Ok(())
            })
            .unwrap();
        let events: Vec<String> = all_events(&store, "acme", "c1")
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(events, ["e1", "e2"]);
        assert_eq!(
            assert_ledger_matches_balance(&store, "acme", "c1"),
            Points {
                balance: 150,
                lifetime: 150,
                pending: 0,
            }
        );
    }

    #[test]
    fn a_repeated_event_id_conflicts_and_awards_nothing_twice() {
        let (_dir, store) = with_tenants(&["acme", "acme2"]);
        post(&store, "acme", "e1", "c1", "checkout", T0, &[earn(10)]).unwrap();
        let error = post(&store, "acme", "e1", "c1", "checkout", T0, &[earn(10)]).unwrap_err();
        assert!(matches!(error, StoreError::Conflict(_)), "{error}");
        assert_eq!(
            error.to_string(),
            "event e1 of tenant acme already exists (seq 1)"
        );
        // Even for another customer: ids are unique per tenant.
        let error = post(&store, "acme", "e1", "c2", "checkout", T0, &[earn(10)]).unwrap_err();
        assert!(matches!(error, StoreError::Conflict(_)), "{error}");
        // Within one batch too.
        store
            .write_batch(&mut |txn: &mut dyn BatchTxn| {
                let first = evaluate(txn, "acme", "e2", "c1", "checkout", T0, &[earn(1)]);
                txn.append(first)?;
                let again = evaluate(txn, "acme", "e2", "c1", "checkout", T0, &[earn(1)]);
                let error = txn.append(again).unwrap_err();
                assert!(matches!(error, StoreError::Conflict(_)), "{error}");
                Ok(())
            })
            .unwrap();
        // Another tenant may use the same id.
        assert_eq!(
            post(&store, "acme2", "e1", "c1", "checkout", T0, &[earn(7)])
                .unwrap()
                .seq,
            1
        );

        let c1 = store.customer("acme", "c1").unwrap().unwrap();
        assert_eq!(c1.event_count, 2);
        assert_eq!(c1.customer.points.balance, 11);
        assert_eq!(store.customer("acme", "c2").unwrap(), None);
        assert_ledger_matches_balance(&store, "acme", "c1");
        assert_ledger_matches_balance(&store, "acme2", "c1");
        assert_eq!(store.event("acme2", "e1").unwrap().unwrap().points, 7);
    }

    /// A host trigger in `tenant`'s outbox, entered at `created_at`; answers its seq.
    fn host_trigger(store: &RedbStore, tenant: &str, created_at: Option<&str>) -> u64 {
        let trigger = tally_host::storage::OutboxTrigger {
            seq: 0,
            event_id: String::new(),
            customer: String::new(),
            plugin: "system".to_owned(),
            name: "WebhookEndpointDisabled".to_owned(),
            data: raw(json!({"endpoint": "wh_1"})),
            snapshot: None,
            created_at: created_at.map(at),
        };
        store.add_trigger(tenant, &trigger).unwrap()
    }

    fn outbox_seqs(store: &RedbStore, tenant: &str) -> Vec<u64> {
        let outbox = store.outbox(tenant, 0, 100).unwrap();
        outbox.iter().map(|trigger| trigger.seq).collect()
    }

    #[test]
    fn outbox_pruning_obeyed() {
        let (_dir, store) = with_tenants(&["acme", "other"]);
        // A row from before `created_at` was kept counts as old.
        assert_eq!(host_trigger(&store, "acme", None), 1);
        assert_eq!(
            host_trigger(&store, "acme", Some("2026-01-01T00:00:00Z")),
            2
        );
        assert_eq!(
            host_trigger(&store, "acme", Some("2026-01-01T00:00:00Z")),
            3
        );
        assert_eq!(
            host_trigger(&store, "acme", Some("2026-03-01T00:00:00Z")),
            4
        );
        host_trigger(&store, "other", Some("2026-01-01T00:00:00Z"));
        // Old enough, up to where every endpoint is: 1 and 2 go, 3 waits for its endpoint.
        let before = at("2026-02-01T00:00:00Z");
        assert_eq!(store.prune_outbox("acme", 2, before, 10).unwrap(), 2);
        assert_eq!(outbox_seqs(&store, "acme"), [3, 4]);
        // Past the endpoints now, but no further than the first that is too young.
        assert_eq!(store.prune_outbox("acme", u64::MAX, before, 10).unwrap(), 1);
        assert_eq!(outbox_seqs(&store, "acme"), [4]);
        assert_eq!(outbox_seqs(&store, "other"), [1], "another tenant's stays");
        // The sequence goes on after pruning.
        assert_eq!(host_trigger(&store, "acme", None), 5);
    }

    #[test]
    fn outbox_pruning_violated() {
        let (_dir, store) = with_tenants(&["acme"]);
        host_trigger(&store, "acme", Some("2026-03-01T00:00:00Z"));
        host_trigger(&store, "acme", Some("2026-03-02T00:00:00Z"));
        // Too young, or past where the endpoints are: nothing goes.
        let before = at("2026-02-01T00:00:00Z");
        assert_eq!(store.prune_outbox("acme", u64::MAX, before, 10).unwrap(), 0);
        assert_eq!(
            store
                .prune_outbox("acme", 0, at("2027-01-01T00:00:00Z"), 10)
                .unwrap(),
            0
        );
        assert_eq!(
            store.prune_outbox("nobody", u64::MAX, before, 10).unwrap(),
            0
        );
        assert_eq!(outbox_seqs(&store, "acme"), [1, 2]);
    }

    #[test]
    fn reopening_the_file_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.redb");
        let wasm = b"\0asm".as_slice();
        let before = {
            let store = RedbStore::open(&path).unwrap();
            store.create_tenant(&tenant_record("acme"), key(1)).unwrap();
            store.set_admin_key_hash(key(9)).unwrap();
            store
                .put_event_type(
                    "acme",
                    &EventTypeRecord {
                        id: "checkout".to_owned(),
                        display_name: "Checkout".to_owned(),
                        document: json!({"type": "object"}),
                        created_at: at("2026-01-01T00:00:00Z"),
                    },
                )
                .unwrap();
            let sha = hex::encode(Sha256::digest(wasm));
            store
                .add_plugin_version("acme", "points", wasm, &sha, at("2026-01-01T00:00:00Z"))
                .unwrap();
            post(&store, "acme", "e1", "c1", "checkout", T0, &[earn(10)]).unwrap();
            post(&store, "acme", "e2", "c1", "checkout", T0 + 1, &[spend(4)]).unwrap();
            (
                store.tenant("acme").unwrap(),
                store.event_types("acme").unwrap(),
                store.plugins("acme").unwrap(),
                store.customer("acme", "c1").unwrap(),
                all_events(&store, "acme", "c1"),
                store.ledger("acme", "c1", 100, None).unwrap(),
            )
        };
        let store = RedbStore::open(&path).unwrap();
        let after = (
            store.tenant("acme").unwrap(),
            store.event_types("acme").unwrap(),
            store.plugins("acme").unwrap(),
            store.customer("acme", "c1").unwrap(),
            all_events(&store, "acme", "c1"),
            store.ledger("acme", "c1", 100, None).unwrap(),
        );
        assert_eq!(after, before);
        assert_eq!(after.4.len(), 2);
        assert_eq!(store.admin_key_hash().unwrap(), Some(key(9)));
        assert_eq!(
            store
                .tenant_by_key_hash(key(1))
                .unwrap()
                .map(|t| t.id.to_string()),
            Some("acme".to_owned())
        );
        assert_eq!(
            store.plugin_wasm("acme", "points", 1).unwrap().as_deref(),
            Some(wasm)
        );
        // Sequences carry on where they were.
        let third = post(&store, "acme", "e3", "c1", "checkout", T0 + 2, &[earn(1)]).unwrap();
        assert_eq!(third.seq, 3);
        assert_ledger_matches_balance(&store, "acme", "c1");
    }

    /// Reads every page of `query` and checks each page's size.
    fn pages(store: &RedbStore, customer: &str, query: &EventQuery) -> Vec<String> {
        let mut query = query.clone();
        let mut ids = Vec::new();
        for _ in 0..1000 {
            let page = store.customer_events("acme", customer, &query).unwrap();
            assert!(page.items.len() <= query.limit);
            if page.next_cursor.is_some() {
                assert_eq!(page.items.len(), query.limit, "only a full page has a next");
            }
            ids.extend(page.items.into_iter().map(|e| e.id));
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => return ids,
            }
        }
        panic!("paging {query:?} does not end");
    }

    #[test]
    fn histories_page_by_time_in_both_directions() {
        let (_dir, store) = with_tenants(&["acme", "acme2"]);
        // Events arrive out of time order, several share a second, and another customer and
        // another tenant write in between.
        let actions = ["checkout", "repair", "swim"];
        let mut expected = Vec::new(); // (seconds, seq, id, action)
        let mut seq = 0;
        for n in 0..40_i64 {
            let at = T0 + (n * 7919) % 23 * 60;
            let action = actions[usize::try_from(n % 3).unwrap()];
            let id = format!("e{n:02}");
            let event = post(&store, "acme", &id, "c1", action, at, &[earn(n + 1)]).unwrap();
            seq += 1;
            assert_eq!(event.seq, seq);
            expected.push((at, event.seq, id.clone(), action));
            let other = format!("o{n:02}");
            post(&store, "acme", &other, "c10", "checkout", at, &[]).unwrap();
            post(&store, "acme2", &id, "c1", "checkout", at, &[]).unwrap();
            seq += 1;
        }
        expected.sort();
        let select =
            |from: Option<i64>, to: Option<i64>, actions: Option<&[&str]>, newest: bool| {
                let mut ids: Vec<String> = expected
                    .iter()
                    .filter(|(at, _, _, action)| {
                        from.is_none_or(|from| *at >= from)
                            && to.is_none_or(|to| *at < to)
                            && actions.is_none_or(|actions| actions.contains(action))
                    })
                    .map(|(_, _, id, _)| id.clone())
                    .collect();
                if newest {
                    ids.reverse();
                }
                ids
            };

        let windows = [
            (None, None),
            (Some(T0 + 5 * 60), None),
            (None, Some(T0 + 17 * 60)),
            (Some(T0 + 3 * 60), Some(T0 + 11 * 60)),
            (Some(T0 + 3 * 60), Some(T0 + 3 * 60)),
            (Some(T0 + 11 * 60), Some(T0 + 3 * 60)),
        ];
        let filters: [Option<&[&str]>; 3] = [None, Some(&["repair"]), Some(&["swim", "checkout"])];
        for (from, to) in windows {
            for actions in filters {
                for newest_first in [false, true] {
                    for limit in [1, 4, 7, 100] {
                        let query = EventQuery {
                            actions: actions.map(|a| a.iter().map(|s| (*s).to_owned()).collect()),
                            channel: None,
                            campaign: None,
                            from: from.map(Timestamp::from_unix_seconds),
                            to: to.map(Timestamp::from_unix_seconds),
                            newest_first,
                            limit,
                            cursor: None,
                        };
                        assert_eq!(
                            pages(&store, "c1", &query),
                            select(from, to, actions, newest_first),
                            "{query:?}"
                        );
                    }
                }
            }
        }
        assert_eq!(
            pages(&store, "c10", &EventQuery::default()).len(),
            40,
            "the other customer's history is its own"
        );
        assert_eq!(pages(&store, "c", &EventQuery::default()).len(), 0);

        // A cursor is a position: events appended after it was issued that sort after it show up
        // on later pages, and it reads either way.
        let first = store
            .customer_events(
                "acme",
                "c1",
                &EventQuery {
                    limit: 10,
                    ..EventQuery::default()
                },
            )
            .unwrap();
        let cursor = first.next_cursor.clone().unwrap();
        let late = T0 + 22 * 60 + 1;
        post(&store, "acme", "late", "c1", "checkout", late, &[]).unwrap();
        let rest = store
            .customer_events(
                "acme",
                "c1",
                &EventQuery {
                    limit: 100,
                    cursor: Some(cursor.clone()),
                    ..EventQuery::default()
                },
            )
            .unwrap();
        assert_eq!(rest.items.len(), 31);
        assert_eq!(rest.items.last().unwrap().id, "late");
        let back = store
            .customer_events(
                "acme",
                "c1",
                &EventQuery {
                    limit: 100,
                    newest_first: true,
                    cursor: Some(cursor),
                    ..EventQuery::default()
                },
            )
            .unwrap();
        let mut expected_back: Vec<String> = first.items.iter().map(|e| e.id.clone()).collect();
        expected_back.pop();
        expected_back.reverse();
        let back: Vec<String> = back.items.into_iter().map(|e| e.id).collect();
        assert_eq!(back, expected_back);

        let zero = EventQuery {
            limit: 0,
            ..EventQuery::default()
        };
        let page = store.customer_events("acme", "c1", &zero).unwrap();
        assert_eq!((page.items.len(), page.next_cursor), (0, None));

        for bad in ["", "nonsense", "l0000000000000001"] {
            let query = EventQuery {
                cursor: Some(bad.to_owned()),
                ..EventQuery::default()
            };
            let error = store.customer_events("acme", "c1", &query).unwrap_err();
            assert!(matches!(error, StoreError::Invalid(_)), "{bad:?}: {error}");
        }
    }

    /// Every customer of a tenant is rescheduled, across several transactions, and the
    /// clock's index follows; another tenant's customers are left alone.
    #[test]
    fn a_reschedule_reaches_every_customer_of_the_tenant_only() {
        let (_dir, store) = with_tenants(&["acme", "other"]);
        let customers = 1_234;
        for tenant in ["acme", "other"] {
            store
                .write_batch(&mut |txn: &mut dyn BatchTxn| {
                    for n in 0..customers {
                        let customer = format!("c{n:05}");
                        let mut append =
                            evaluate(txn, tenant, &format!("e{n}"), &customer, "opt_in", T0, &[]);
                        append
                            .customer
                            .customer
                            .attributes
                            .insert("birthday".to_owned(), json!("1990-12-24"));
                        txn.append(append)?;
                    }
                    Ok(())
                })
                .unwrap();
        }
        let far = at("2030-01-01T00:00:00Z");
        assert!(
            store.due("acme", far, 10).unwrap().is_empty(),
            "birthdays are off"
        );

        let mut acme = store.tenant("acme").unwrap().unwrap();
        acme.schedule.birthday = true;
        store.update_tenant(&acme).unwrap();
        assert_eq!(store.reschedule("acme").unwrap(), customers);
        let due = store.due("acme", far, 10_000).unwrap();
        assert_eq!(due.len(), customers);
        assert!(
            due.iter()
                .all(|work| work.due.at == at("2026-12-24T09:00:00Z"))
        );
        assert_eq!(
            store.customer("acme", "c00777").unwrap().unwrap().due.len(),
            1,
            "the record and the index agree"
        );
        assert!(store.due("other", far, 10).unwrap().is_empty());
        // Nothing changed since: a second walk changes nothing.
        assert_eq!(store.reschedule("acme").unwrap(), 0);
        // Turned off again: the index empties.
        acme.schedule.birthday = false;
        store.update_tenant(&acme).unwrap();
        assert_eq!(store.reschedule("acme").unwrap(), customers);
        assert!(store.due("acme", far, 10).unwrap().is_empty());
    }

    #[test]
    fn ledgers_page_and_sum_to_the_balance() {
        let (_dir, store) = with_tenants(&["acme"]);
        for n in 0..15_i64 {
            let points = match n % 3 {
                0 => vec![earn(100 + n)],
                1 => vec![earn(5), spend(3)],
                _ => vec![PointEntry::new(-(n + 1), "return").with_kind(PointKind::Reverse)],
            };
            post(
                &store,
                "acme",
                &format!("e{n}"),
                "c1",
                "checkout",
                T0 + n,
                &points,
            )
            .unwrap();
            post(
                &store,
                "acme",
                &format!("x{n}"),
                "c2",
                "checkout",
                T0 + n,
                &[earn(1)],
            )
            .unwrap();
        }
        // Earned 530 + 25, spent 15, reversed 45.
        assert_eq!(
            assert_ledger_matches_balance(&store, "acme", "c1"),
            Points {
                balance: 495,
                lifetime: 510,
                pending: 0,
            }
        );
        assert_eq!(
            assert_ledger_matches_balance(&store, "acme", "c2"),
            Points {
                balance: 15,
                lifetime: 15,
                pending: 0,
            }
        );

        let whole = store.ledger("acme", "c1", usize::MAX, None).unwrap().items;
        assert_eq!(whole.len(), 20);
        assert!(whole.windows(2).all(|w| w[0].seq < w[1].seq));
        let mut paged = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.ledger("acme", "c1", 4, cursor.as_deref()).unwrap();
            paged.extend(page.items);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(paged, whole);
        assert_eq!(store.ledger("acme", "c1", 0, None).unwrap().items, []);
        assert_eq!(store.ledger("acme", "nobody", 10, None).unwrap().items, []);
        let error = store.ledger("acme", "c1", 4, Some("e00")).unwrap_err();
        assert!(matches!(error, StoreError::Invalid(_)), "{error}");
    }

    /// The store's tables, for tests that write a file by hand: `meta`, name -> bytes.
    const META: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("meta");
    /// `customer_data`'s key: (tenant, customer, part, time, number, plugin).
    type CustomerDataKey<'a> = (&'a str, &'a str, u8, i64, u64, &'a str);
    /// `customer_data`: a customer's history, record, plugin states and ledger.
    const CUSTOMER_DATA: redb::TableDefinition<'_, CustomerDataKey<'_>, &[u8]> =
        redb::TableDefinition::new("customer_data");
    /// `events`: (tenant, event id) -> the event row.
    const EVENTS: redb::TableDefinition<'_, (&str, &str), &[u8]> =
        redb::TableDefinition::new("events");

    /// Every event of `customers` (tenant `acme`) as plain JSON, by id: rows the store does
    /// not write, to damage a file with.
    fn json_event_rows(store: &RedbStore, customers: &[&str]) -> Vec<(String, Vec<u8>)> {
        customers
            .iter()
            .flat_map(|customer| all_events(store, "acme", customer))
            .map(|event| (event.id.clone(), serde_json::to_vec(&event).unwrap()))
            .collect()
    }

    /// Writes `rows` (from [`json_event_rows`]) over tenant `acme`'s event rows.
    fn write_json_events(txn: &redb::WriteTransaction, rows: &[(String, Vec<u8>)]) {
        let mut events = txn.open_table(EVENTS).unwrap();
        for (id, json) in rows {
            events
                .insert(("acme", id.as_str()), json.as_slice())
                .unwrap();
        }
    }

    /// A redb file with `meta.format` set to `format`, then whatever `fill` writes in the same
    /// transaction: a file of another build's format.
    fn old_file(path: &std::path::Path, format: u32, fill: impl FnOnce(&redb::WriteTransaction)) {
        let db = redb::Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("format", format.to_le_bytes().as_slice())
                .unwrap();
        }
        fill(&txn);
        txn.commit().unwrap();
    }

    /// A ledger row that is not the ledger row layout is reported as corrupt, with its seq,
    /// not misread.
    #[test]
    fn a_ledger_row_that_does_not_decode_is_corrupt() {
        let (dir, store) = with_tenants(&["acme"]);
        post(&store, "acme", "e1", "ada", "checkout", T0, &[earn(10)]).unwrap();
        let seq = store.ledger("acme", "ada", 1, None).unwrap().items[0].seq;
        drop(store);
        let path = dir.path().join("tally.redb");
        {
            let db = redb::Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(CUSTOMER_DATA)
                .unwrap()
                .insert(("acme", "ada", 3, 0, u64::MAX - seq, ""), &[1_u8, 9, 0][..])
                .unwrap();
            txn.commit().unwrap();
        }
        let store = RedbStore::open(&path).unwrap();
        let error = store.ledger("acme", "ada", 10, None).unwrap_err();
        assert!(
            matches!(&error, StoreError::Corrupt(message) if message.contains(&format!("ledger entry {seq} of customer ada"))),
            "{error:?}"
        );
    }

    /// An event row that is not the event row layout (plain JSON, or a damaged row) is
    /// reported as corrupt, with its id, both when read by id and from its customer's history.
    #[test]
    fn an_event_row_that_does_not_decode_is_corrupt() {
        let (dir, store) = with_tenants(&["acme"]);
        post(&store, "acme", "e1", "ada", "checkout", T0, &[earn(10)]).unwrap();
        let json = json_event_rows(&store, &["ada"]);
        drop(store);
        let path = dir.path().join("tally.redb");
        for damaged in [json[0].1.clone(), vec![1, 200, 0, 0, 0, 0x10, b'x']] {
            {
                let db = redb::Database::open(&path).unwrap();
                let txn = db.begin_write().unwrap();
                write_json_events(&txn, &[("e1".to_owned(), damaged)]);
                txn.commit().unwrap();
            }
            let store = RedbStore::open(&path).unwrap();
            let is_corrupt = |error: &StoreError| matches!(error, StoreError::Corrupt(message) if message.contains("event e1 of tenant acme"));
            let error = store.event("acme", "e1").unwrap_err();
            assert!(is_corrupt(&error), "{error:?}");
            let query = EventQuery {
                limit: 10,
                ..EventQuery::default()
            };
            let error = store.customer_events("acme", "ada", &query).unwrap_err();
            assert!(is_corrupt(&error), "{error:?}");
        }
    }

    /// `tally serve --cache-mb` bounds redb's page cache; a cache far smaller than what is
    /// written still reads back every event, entry and record, then and after a reopen.
    #[test]
    fn a_small_page_cache_reads_back_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.redb");
        let store = RedbStore::open_with_cache(&path, 64 << 10).unwrap();
        store.create_tenant(&tenant_record("acme"), key(1)).unwrap();
        for n in 0..300 {
            let customer = format!("c{}", n % 7);
            post(
                &store,
                "acme",
                &format!("e{n}"),
                &customer,
                "checkout",
                T0 + n,
                &[earn(3)],
            )
            .unwrap();
        }
        let check = |store: &RedbStore, opening: &str| {
            for n in 0..7 {
                let customer = format!("c{n}");
                // 300 events over 7 customers: 43 each for the first six, 42 for the last.
                let expected = if n < 6 { 43 } else { 42 };
                assert_eq!(
                    all_events(store, "acme", &customer).len(),
                    expected,
                    "{opening}"
                );
                assert_eq!(
                    assert_ledger_matches_balance(store, "acme", &customer).balance,
                    3 * expected as i64
                );
            }
            assert!(store.event("acme", "e299").unwrap().is_some(), "{opening}");
        };
        check(&store, "as written");
        drop(store);
        check(
            &RedbStore::open_with_cache(&path, 64 << 10).unwrap(),
            "reopened",
        );
    }

    #[test]
    fn a_file_of_another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.redb");
        old_file(&path, 99, |_| {});
        let error = RedbStore::open(&path).unwrap_err();
        assert!(
            error
                .to_string()
                .ends_with("has storage format 99; this build reads format 7"),
            "{error}"
        );
    }

    /// The file's bytes and when it was last modified: what a refused file must keep.
    fn file_state(path: &std::path::Path) -> (Vec<u8>, std::time::SystemTime) {
        let modified = std::fs::metadata(path).unwrap().modified().unwrap();
        (std::fs::read(path).unwrap(), modified)
    }

    /// `meta.format` of the file at `path`, read without writing to it.
    fn stored_format(path: &std::path::Path) -> Option<u32> {
        let db = redb::ReadOnlyDatabase::open(path).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(redb::TableError::TableDoesNotExist(_)) => return None,
            Err(error) => panic!("{error}"),
        };
        let format = meta.get("format").unwrap()?;
        Some(u32::from_le_bytes(format.value().try_into().unwrap()))
    }

    /// A JSON event row, as a store of an older format might hold it.
    fn fill_an_event(txn: &redb::WriteTransaction) {
        txn.open_table(EVENTS)
            .unwrap()
            .insert(("acme", "e1"), br#"{"id":"e1"}"#.as_slice())
            .unwrap();
    }

    /// A file of an older format (5 here) is refused with an error that names both formats,
    /// and is neither migrated nor written to: its bytes, its modification time and its
    /// `meta.format` stay as they were, however often it is opened.
    #[test]
    fn an_older_format_is_refused_and_the_file_is_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.redb");
        old_file(&path, 5, fill_an_event);
        let before = file_state(&path);
        for opening in ["first", "second"] {
            let error = RedbStore::open(&path).unwrap_err();
            assert!(
                matches!(
                    &error,
                    StoreError::UnsupportedFormat { path: named, found: Some(5), expected: 7 }
                        if *named == path
                ),
                "{opening}: {error:?}"
            );
            let message = error.to_string();
            assert!(
                message.contains("storage format 5") && message.contains("reads format 7"),
                "{opening}: {message}"
            );
            assert!(file_state(&path) == before, "{opening}: the file changed");
        }
        assert_eq!(stored_format(&path), Some(5));
    }

    /// A file with tables but no `meta.format` is no store of this format either: it is
    /// refused the same way, saying it records no format and naming this build's, and left as
    /// it was.
    #[test]
    fn an_older_format_is_refused_when_the_file_has_tables_but_no_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            fill_an_event(&txn);
            txn.commit().unwrap();
        }
        let before = file_state(&path);
        let error = RedbStore::open(&path).unwrap_err();
        assert!(
            matches!(
                &error,
                StoreError::UnsupportedFormat {
                    found: None,
                    expected: 7,
                    ..
                }
            ),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("no storage format") && message.contains("reads format 7"),
            "{message}"
        );
        assert!(file_state(&path) == before, "the file changed");
        assert_eq!(stored_format(&path), None);
    }

    /// A file of an older format that a crash left is refused too: redb repairs it on
    /// opening, before its format can be read, and the store then refuses it without
    /// writing to it.
    #[test]
    fn an_older_format_is_refused_after_a_crash_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.redb");
        let crashed = dir.path().join("crashed.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format", 5_u32.to_le_bytes().as_slice())
                .unwrap();
            fill_an_event(&txn);
            txn.commit().unwrap();
            // The file as the disk holds it while the database is open: what a crash leaves.
            std::fs::copy(&path, &crashed).unwrap();
        }
        let error = RedbStore::open(&crashed).unwrap_err();
        assert!(
            matches!(
                &error,
                StoreError::UnsupportedFormat {
                    found: Some(5),
                    expected: 7,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(stored_format(&crashed), Some(5));
    }

    /// A file with no table (none yet, an empty one, or a redb file nothing was written to)
    /// is new: it gets this build's format, and opens again.
    #[test]
    fn a_new_file_gets_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent.redb");
        let empty = dir.path().join("empty.redb");
        std::fs::write(&empty, b"").unwrap();
        let bare = dir.path().join("bare.redb");
        drop(redb::Database::create(&bare).unwrap());
        for path in [absent, empty, bare] {
            drop(RedbStore::open(&path).unwrap());
            assert_eq!(stored_format(&path), Some(7), "{}", path.display());
            drop(RedbStore::open(&path).unwrap());
        }
    }
}
