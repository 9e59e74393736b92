//! The redb store against a reference model, in the spirit of redb's own fuzzing: seeded
//! random batches of appends (repeated ids, abandoned batches, plugin state, triggers, events
//! out of time order) are applied to the store and to a few `BTreeMap`s, and every balance,
//! count, history, ledger and outbox must agree, before and after reopening the file.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

// Inside `mod storage` so that `cargo test -p tally-host storage` selects these tests too.
mod storage {
    use std::collections::BTreeMap;

    use serde_json::json;
    use tally_host::domain::{CustomerId, TenantId, new_account, points_after};
    use tally_host::storage::{
        AppendEvent, BatchRead, BatchTxn, EventOutcome, EventQuery, NewLedgerEntry, NewTrigger,
        RawJson, RedbStore, Store, StoreError, StoredEvent, TenantRecord,
    };
    use tally_sdk::{PointEntry, PointKind, Points, Timestamp, Trigger};

    const TENANTS: [&str; 2] = ["acme", "acme2"];
    /// `c1` and `c10` share a prefix, so a key range that leaks past its customer shows.
    const CUSTOMERS: [&str; 4] = ["c", "c1", "c10", "d"];
    const ACTIONS: [&str; 3] = ["checkout", "repair", "swim"];
    const PLUGINS: [&str; 2] = ["points", "tiers"];
    const T0: i64 = 1_790_000_000;

    /// splitmix64: deterministic, tiny, good enough to pick test cases.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
    }

    #[derive(Debug, Clone, Default, PartialEq)]
    struct ModelCustomer {
        points: Points,
        /// (seconds, seq, id, action), in append order.
        events: Vec<(i64, u64, String, String)>,
        /// (amount, kind), in append order.
        ledger: Vec<(i64, PointKind)>,
    }

    #[derive(Debug, Clone, Default)]
    struct Model {
        customers: BTreeMap<(String, String), ModelCustomer>,
        /// (tenant, event id) → customer.
        events: BTreeMap<(String, String), String>,
        /// (tenant, plugin, customer) → state.
        states: BTreeMap<(String, String, String), RawJson>,
        /// tenant → (trigger name, event id), in order.
        outbox: BTreeMap<String, Vec<(String, String)>>,
        /// tenant → last event seq.
        seq: BTreeMap<String, u64>,
    }

    /// One event the generator decided on.
    struct Planned {
        tenant: &'static str,
        id: String,
        customer: &'static str,
        action: &'static str,
        at: i64,
        points: Vec<PointEntry>,
        states: Vec<(String, Option<RawJson>)>,
        triggers: Vec<NewTrigger>,
    }

    /// Plans an event; one in ten reuses an id planned before: stored, earlier in the same batch,
    /// or only in an abandoned batch (so new after all).
    fn plan(rng: &mut Rng, known: &mut Vec<(&'static str, String)>) -> Planned {
        let (tenant, id) = if !known.is_empty() && rng.chance(10) {
            known[rng.below(known.len())].clone()
        } else {
            let id = format!("e{}", known.len());
            known.push((rng.pick(&TENANTS), id));
            known[known.len() - 1].clone()
        };
        let mut points = Vec::new();
        for _ in 0..rng.below(4) {
            let amount = i64::try_from(rng.below(200)).unwrap() + 1;
            points.push(match rng.below(3) {
                0 => PointEntry::new(amount, "earn").with_kind(PointKind::Earn),
                1 => PointEntry::new(-amount, "spend").with_kind(PointKind::Spend),
                // No kind given: the sign decides.
                _ => PointEntry::new(amount - 100, "adjust"),
            });
        }
        let mut states = Vec::new();
        for plugin in PLUGINS {
            match rng.below(4) {
                0 => states.push((plugin.to_owned(), None)),
                1 => states.push((
                    plugin.to_owned(),
                    Some(RawJson::from_value(&json!({"n": rng.below(1000)}))),
                )),
                _ => {}
            }
        }
        let triggers = (0..rng.below(3))
            .map(|n| NewTrigger {
                plugin: rng.pick(&PLUGINS).to_owned(),
                trigger: Trigger {
                    name: format!("T{n}"),
                    data: RawJson::from_value(&json!({"id": id})),
                },
            })
            .collect();
        Planned {
            tenant,
            id,
            customer: rng.pick(&CUSTOMERS),
            action: rng.pick(&ACTIONS),
            // A narrow window, so many events share a second and arrive out of time order.
            at: T0 + i64::try_from(rng.below(50)).unwrap(),
            points,
            states,
            triggers,
        }
    }

    /// What the pipeline does: build the new customer state on what the batch reads.
    fn evaluate(txn: &dyn BatchTxn, planned: &Planned) -> AppendEvent {
        let received_at: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let mut record = txn
            .customer(planned.tenant, planned.customer)
            .unwrap()
            .unwrap_or_else(|| {
                new_account(&CustomerId::parse(planned.customer).unwrap(), received_at)
            });
        let ledger: Vec<NewLedgerEntry> = planned
            .points
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
        let timestamp = Timestamp::from_unix_seconds(planned.at);
        AppendEvent {
            tenant: planned.tenant.to_owned(),
            event: StoredEvent {
                seq: 0,
                id: planned.id.clone(),
                action: planned.action.to_owned(),
                label: None,
                date: timestamp.date_string(),
                timestamp,
                customer: planned.customer.to_owned(),
                points: planned.points.iter().map(|p| p.amount).sum(),
                source: "import".to_owned(),
                ip_address: None,
                user_agent: None,
                data: RawJson::from_value(&json!({})),
                received_at,
                channel: None,
                campaign: None,
                goals: Vec::new(),
                engagement_value: None,
                outcome: EventOutcome {
                    points: planned.points.clone(),
                    ..EventOutcome::default()
                },
            },
            customer: record,
            ledger,
            plugin_states: planned.states.clone(),
            triggers: planned.triggers.clone(),
            reward: None,
            erase: false,
            merged: None,
            snapshot: None,
        }
    }

    /// The model's own account of an append; `false` when it must be refused as a repeat.
    fn model_append(model: &mut Model, planned: &Planned) -> bool {
        let tenant = planned.tenant.to_owned();
        let event_key = (tenant.clone(), planned.id.clone());
        if model.events.contains_key(&event_key) {
            return false;
        }
        model.events.insert(event_key, planned.customer.to_owned());
        let seq = model.seq.entry(tenant.clone()).or_default();
        *seq += 1;
        let customer = model
            .customers
            .entry((tenant.clone(), planned.customer.to_owned()))
            .or_default();
        customer.events.push((
            planned.at,
            *seq,
            planned.id.clone(),
            planned.action.to_owned(),
        ));
        for entry in &planned.points {
            // Written out here rather than by Customer::apply, so the model checks that rule too.
            let kind = match entry.kind {
                Some(kind) => kind,
                None if entry.amount >= 0 => PointKind::Earn,
                None => PointKind::Spend,
            };
            customer.points.balance += entry.amount;
            if kind != PointKind::Spend {
                customer.points.lifetime += entry.amount;
            }
            customer.ledger.push((entry.amount, kind));
        }
        for (plugin, state) in &planned.states {
            let key = (tenant.clone(), plugin.clone(), planned.customer.to_owned());
            match state {
                Some(state) => model.states.insert(key, state.clone()),
                None => model.states.remove(&key),
            };
        }
        let outbox = model.outbox.entry(tenant).or_default();
        for trigger in &planned.triggers {
            outbox.push((trigger.trigger.name.clone(), planned.id.clone()));
        }
        true
    }

    fn history(
        store: &RedbStore,
        tenant: &str,
        customer: &str,
        query: &EventQuery,
    ) -> Vec<StoredEvent> {
        let mut query = query.clone();
        let mut items = Vec::new();
        for _ in 0..10_000 {
            let page = store.customer_events(tenant, customer, &query).unwrap();
            items.extend(page.items);
            match page.next_cursor {
                Some(cursor) => query.cursor = Some(cursor),
                None => return items,
            }
        }
        panic!("paging {query:?} does not end");
    }

    fn check(store: &RedbStore, model: &Model, rng: &mut Rng) {
        for tenant in TENANTS {
            for customer in CUSTOMERS {
                let key = (tenant.to_owned(), customer.to_owned());
                let Some(expected) = model.customers.get(&key) else {
                    assert_eq!(store.customer(tenant, customer).unwrap(), None);
                    assert!(history(store, tenant, customer, &EventQuery::default()).is_empty());
                    continue;
                };
                let record = store.customer(tenant, customer).unwrap().unwrap();
                let count = u64::try_from(expected.events.len()).unwrap();
                assert_eq!(
                    record.customer.points, expected.points,
                    "{tenant}/{customer}"
                );
                assert_eq!(record.event_count, count, "{tenant}/{customer}");

                let ledger = store.ledger(tenant, customer, 7, None).unwrap();
                let mut entries = ledger.items;
                let mut cursor = ledger.next_cursor;
                while let Some(next) = cursor {
                    let page = store.ledger(tenant, customer, 7, Some(&next)).unwrap();
                    entries.extend(page.items);
                    cursor = page.next_cursor;
                }
                let moves: Vec<(i64, PointKind)> =
                    entries.iter().map(|e| (e.amount, e.kind)).collect();
                assert_eq!(moves, expected.ledger, "{tenant}/{customer}");
                let sum: i64 = entries.iter().map(|e| e.amount).sum();
                assert_eq!(sum, record.customer.points.balance, "ledger sum == balance");
                if let Some(last) = entries.last() {
                    assert_eq!(
                        Points {
                            balance: last.balance_after,
                            lifetime: last.lifetime_after,
                            pending: last.pending_after,
                        },
                        expected.points
                    );
                }

                // The whole history, and one random query, against the model's.
                let mut ordered = expected.events.clone();
                ordered.sort();
                let all: Vec<(i64, u64, String, String)> =
                    history(store, tenant, customer, &EventQuery::default())
                        .into_iter()
                        .map(|e| (e.timestamp.unix_seconds(), e.seq, e.id, e.action))
                        .collect();
                assert_eq!(all, ordered, "{tenant}/{customer}");

                let from = rng
                    .chance(50)
                    .then(|| T0 + i64::try_from(rng.below(50)).unwrap());
                let to = rng
                    .chance(50)
                    .then(|| T0 + i64::try_from(rng.below(50)).unwrap());
                let actions = rng.chance(50).then(|| vec![rng.pick(&ACTIONS).to_owned()]);
                let query = EventQuery {
                    actions: actions.clone(),
                    channel: None,
                    campaign: None,
                    from: from.map(Timestamp::from_unix_seconds),
                    to: to.map(Timestamp::from_unix_seconds),
                    newest_first: rng.chance(50),
                    limit: rng.below(5) + 1,
                    cursor: None,
                };
                let mut wanted: Vec<String> = ordered
                    .iter()
                    .filter(|(at, _, _, action)| {
                        from.is_none_or(|from| *at >= from)
                            && to.is_none_or(|to| *at < to)
                            && actions.as_ref().is_none_or(|a| a.contains(action))
                    })
                    .map(|(_, _, id, _)| id.clone())
                    .collect();
                if query.newest_first {
                    wanted.reverse();
                }
                let got: Vec<String> = history(store, tenant, customer, &query)
                    .into_iter()
                    .map(|e| e.id)
                    .collect();
                assert_eq!(got, wanted, "{tenant}/{customer} {query:?}");
            }
            let outbox: Vec<(String, String)> = store
                .outbox(tenant, 0, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|t| (t.name, t.event_id))
                .collect();
            assert_eq!(
                outbox,
                model.outbox.get(tenant).cloned().unwrap_or_default(),
                "outbox of {tenant}"
            );
        }
        for ((tenant, id), customer) in &model.events {
            let event = store.event(tenant, id).unwrap().unwrap();
            assert_eq!(&event.customer, customer);
        }
        // Plugin state is read inside a batch, which is then abandoned: nothing to commit, and
        // no fsync to wait for.
        let read_only = store
            .write_batch(&mut |txn: &mut dyn BatchTxn| {
                for tenant in TENANTS {
                    for plugin in PLUGINS {
                        for customer in CUSTOMERS {
                            let key = (tenant.to_owned(), plugin.to_owned(), customer.to_owned());
                            assert_eq!(
                                txn.plugin_state(tenant, plugin, customer)?,
                                model.states.get(&key).cloned(),
                                "{key:?}"
                            );
                        }
                    }
                }
                Err(StoreError::Invalid("read only".to_owned()))
            })
            .unwrap_err();
        assert_eq!(read_only.to_string(), "read only");
    }

    fn run(seed: u64, batches: usize) {
        let mut rng = Rng(seed);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tally.redb");
        let mut store = RedbStore::open(&path).unwrap();
        for (n, tenant) in (1..).zip(TENANTS) {
            let record = TenantRecord {
                id: TenantId::parse(tenant).unwrap(),
                name: tenant.to_owned(),
                created_at: "2026-01-01T00:00:00Z".parse().unwrap(),
                allow_untyped_events: true,
                allow_negative_balance: false,
                points_expiry: Default::default(),
                schedule: Default::default(),
                future_tolerance_seconds: 300,
                membership_required: false,
                segment: Default::default(),
                customer_schema: None,
            };
            store.create_tenant(&record, [n; 32]).unwrap();
        }
        let mut model = Model::default();
        let mut known = Vec::new();
        let (mut conflicts, mut abandoned) = (0, 0);
        for batch in 0..batches {
            let size = rng.below(8) + 1;
            let plans: Vec<Planned> = (0..size).map(|_| plan(&mut rng, &mut known)).collect();
            let abandon = rng.chance(15);
            let mut pending = model.clone();
            let outcome = store.write_batch(&mut |txn: &mut dyn BatchTxn| {
                for planned in &plans {
                    let append = evaluate(txn, planned);
                    let accepted = model_append(&mut pending, planned);
                    match txn.append(append) {
                        Ok(appended) => {
                            assert!(accepted, "seed {seed}: repeated id {} stored", planned.id);
                            assert_eq!(Some(&appended.event.seq), pending.seq.get(planned.tenant));
                        }
                        Err(StoreError::Conflict(_)) => {
                            assert!(!accepted, "seed {seed}: new id {} refused", planned.id);
                            conflicts += 1;
                        }
                        Err(error) => panic!("seed {seed}: {error}"),
                    }
                }
                if abandon {
                    return Err(StoreError::Invalid("abandoned".to_owned()));
                }
                Ok(())
            });
            match outcome {
                Ok(()) => model = pending,
                Err(error) => {
                    assert!(abandon, "seed {seed} batch {batch}: {error}");
                    abandoned += 1;
                }
            }
            if batch % 10 == 0 {
                check(&store, &model, &mut rng);
            }
        }
        check(&store, &model, &mut rng);
        drop(store);
        store = RedbStore::open(&path).unwrap();
        check(&store, &model, &mut rng);
        eprintln!(
            "seed {seed}: {} events stored, {conflicts} repeats refused, {abandoned} batches abandoned",
            model.events.len()
        );
        assert!(model.events.len() > batches && conflicts > 0 && abandoned > 0);
    }

    #[test]
    fn random_batches_agree_with_a_reference_model() {
        for seed in [1, 2, 0xdead_beef] {
            run(seed, 50);
        }
    }
}
