//! Event types end to end, without HTTP: the Voyado interaction schemas of seeds/000 and
//! the Antavo checkout, form body and CSV import of seeds/002, exactly as those documents
//! print them, go through the same functions the API layer calls.
//!
//! The examples are copied into this file byte for byte (so the tests run anywhere); when
//! the seeds are beside the repository, `examples_are_verbatim_copies_of_the_seeds` checks
//! that the copies have not drifted.

// The tests live in a module named `schema` so that `cargo test -p tally-host schema`
// selects them along with the unit tests of `tally_host::schema`.
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod schema {

    use serde_json::{Value, json};
    use tally_host::schema::{
        BUILTIN_IDS, EventTypes, Resolved, SchemaCache, SchemaError, Violation, builtin,
        builtin_documents, csv_to_events, form_to_json, parse_document, parse_jsonc,
    };

    // seeds/000: Voyado Engage interaction schemas, one line each, `//` comments included.
    const WISHLIST: &str = r##"{ "id": "wishlist", "displayName":"Wishlist", "jsonSchema": { "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": { "date": { "type": "string", "format":"date-time", "displayName": "Date", "showInContactCard": "true" }, "productSku": { "type": "string", "displayName": "SKU", "showInContactCard": "true" } //Product name, product category, brand, price, eco label } } }"##;

    const WHOLESALE_PURCHASE: &str = r##"{ "id": "wholeSalePurchase", "displayName":"Whole sale purchases", "jsonSchema": { "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": { "date": { "type": "string", "format":"date-time", "displayName": "Date of purchase", "showInContactCard": "true" }, "productSku": { "type": "string", "displayName": "SKU", "showInContactCard": "true" }, //Product name, product category, brand, price, eco label, size "pricePaid": { "type": "number", "displayName": "Price paid", "showInContactCard": "true" }, "source": { "type": "string", "displayName": "Source of purchase", "showInContactCard": "true" } } } }"##;

    const REPAIR: &str = r##"{ "id": "repair", "displayName":"Repair", "jsonSchema": { "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": { "registrationDate": { "type": "string", "format":"date-time", "displayName": "Registration date", "showInContactCard": "true" }, "productModel": { "type": "string", "displayName": "Product model", "showInContactCard": "true" }, "brand": { "type": "string", "displayName": "Brand", "showInContactCard": "true" }, "productId": { "type": "string", "displayName": "Product ID", "showInContactCard": "true" }, "storeName": { "type": "string", "displayName": "Store name", "showInContactCard": "true" }, "storeId": { "type": "string", "displayName": "Store ID", "showInContactCard": "true" }, "isFreeRepair": { "type": "boolean", "displayName": "Free repair", "showInContactCard": "true" } } } }"##;

    const PREOWNED_PRODUCT: &str = r##"{ "id": "preownedProduct", "displayName":"Pre-owned", "jsonSchema": { "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": { "date": { "type": "string", "format":"date-time", "displayName": "Date", "showInContactCard": "true" }, "productSku": { "type": "string", "displayName": "Product SKU", "showInContactCard": "true" }, //Product name, product category, brand, price, eco label "size": { "type": "string", "displayName": "Size", "showInContactCard": "true" }, "condition": { "type": "string", "displayName": "Condition", "showInContactCard": "true" }, "storeDropOff": { "type": "boolean", "displayName": "Store drop off", "showInContactCard": "true" }, "reimbursement": { "type": "number", "displayName": "Reimbursement", "showInContactCard": "true" }, "storeName": { "type": "string", "displayName": "Store name", "showInContactCard": "true" }, "storeId": { "type": "string", "displayName": "Store ID", "showInContactCard": "true" } } } }"##;

    const RECYCLED: &str = r##"{ "id": "recycled", "displayName":"Recycled", "jsonSchema": { "$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": { "date": { "type": "string", "format":"date-time", "displayName": "Date", "showInContactCard": "true" }, "dropOffPoint": { "type": "string", "displayName": "Drop off point", "showInContactCard": "true" }, "quantity": { "type": "number", "displayName": "Quantity", "showInContactCard": "true" }, "type": { "type": "number", "displayName": "Type of recycling", "showInContactCard": "true" }//Batteries, electronic waste, aerosol etc } } }"##;

    const ANTAVO_CHECKOUT_MEMBERS: &str = r##""customer": "374397439743",
"action": "checkout",
"data" : {
    "total": "200",
    "transaction_id": "5475-4343-4343-4343-3333",
    "items" : [
        {
          "transaction_id": "5475-4343-4343-4343-3333",
          "product_id": "UFA-8888-94394-EN/38/YELLOW",
          "product_name": "Yellow T-Shirt",
          "product_url": "https://example.com/yellow-t-shirt",
          "quantity": "1",
          "subtotal": "200",
          "price": "200",
          "product_category": "t-shirts"
        }
    ]
}
"##;

    const ANTAVO_FORM_BODY: &str = "customer=374397439743&action=checkout&data%5Btransaction_id%5D=5475-4343-4343-4343-3333&data%5Btotal%5D=200&data%5Bitems%5D%5B0%5D%5Btransaction_id%5D=5475-4343-4343-4343-3333&data%5Bitems%5D%5B0%5D%5Bquantity%5D=1&data%5Bitems%5D%5B0%5D%5Bprice%5D=200&data%5Bitems%5D%5B0%5D%5Bsubtotal%5D=200&data%5Bitems%5D%5B0%5D%5Bproduct_name%5D=Yellow%20T-Shirt&data%5Bitems%5D%5B0%5D%5Bproduct_id%5D=TUFA-8888-94394-EN%2FXL%2FYELLOW&data%5Bitems%5D%5B0%5D%5Bproduct_url%5D=https%3A%2F%2Fexample.com%2Fyellow-t-shirt&data%5Bitems%5D%5B0%5D%5Bproduct_category%5D=t-shirts";

    // seeds/002: Antavo's CSV import of opt-in events. The trailing spaces and the redacted
    // addresses (with a no-break space) are as the document has them.
    const ANTAVO_OPT_IN_CSV: &str = "_id,action,email,first_name,last_name  \n\
374397439743,opt_in,[email\u{a0}protected],John,Bates\n\
345454656512,opt_in,[email\u{a0}protected],Bill,Overback  \n\
342856642764,opt_in,[email\u{a0}protected],Claudette,Moral\n";

    const VOYADO: [&str; 5] = [
        WISHLIST,
        WHOLESALE_PURCHASE,
        REPAIR,
        PREOWNED_PRODUCT,
        RECYCLED,
    ];

    fn voyado_documents() -> Vec<Value> {
        VOYADO
            .iter()
            .map(|text| parse_jsonc(text).unwrap())
            .collect()
    }

    fn tenant(allow_untyped: bool) -> EventTypes {
        EventTypes::new(
            &SchemaCache::new(),
            "acme",
            voyado_documents(),
            allow_untyped,
        )
    }

    /// The Antavo page shows the event's members without the enclosing braces.
    fn antavo_checkout() -> Value {
        parse_jsonc(&format!("{{{ANTAVO_CHECKOUT_MEMBERS}}}")).unwrap()
    }

    fn violations(action: &str, data: Value) -> Vec<Violation> {
        match tenant(false).check_event(action, &data) {
            Err(err @ SchemaError::SchemaViolation { .. }) => err.violations().to_vec(),
            other => panic!("{action} {data}: expected violations, got {other:?}"),
        }
    }

    fn paths(violations: &[Violation]) -> Vec<(&str, &str)> {
        violations
            .iter()
            .map(|v| (v.path.as_str(), v.keyword.as_str()))
            .collect()
    }

    fn obeyed(action: &str, data: Value) {
        if let Err(err) = tenant(false).check_event(action, &data) {
            panic!("{action} {data}: {err}");
        }
    }

    /// (id, displayName, contact-card fields as (property, displayName)).
    type Expected = (
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
    );

    #[test]
    fn voyado_schemas_as_written_obeyed() {
        let expected: [Expected; 5] = [
            (
                "wishlist",
                "Wishlist",
                &[("date", "Date"), ("productSku", "SKU")],
            ),
            (
                "wholeSalePurchase",
                "Whole sale purchases",
                &[
                    ("date", "Date of purchase"),
                    ("pricePaid", "Price paid"),
                    ("productSku", "SKU"),
                    ("source", "Source of purchase"),
                ],
            ),
            (
                "repair",
                "Repair",
                &[
                    ("brand", "Brand"),
                    ("isFreeRepair", "Free repair"),
                    ("productId", "Product ID"),
                    ("productModel", "Product model"),
                    ("registrationDate", "Registration date"),
                    ("storeId", "Store ID"),
                    ("storeName", "Store name"),
                ],
            ),
            (
                "preownedProduct",
                "Pre-owned",
                &[
                    ("condition", "Condition"),
                    ("date", "Date"),
                    ("productSku", "Product SKU"),
                    ("reimbursement", "Reimbursement"),
                    ("size", "Size"),
                    ("storeDropOff", "Store drop off"),
                    ("storeId", "Store ID"),
                    ("storeName", "Store name"),
                ],
            ),
            (
                "recycled",
                "Recycled",
                &[
                    ("date", "Date"),
                    ("dropOffPoint", "Drop off point"),
                    ("quantity", "Quantity"),
                    ("type", "Type of recycling"),
                ],
            ),
        ];
        for (text, (id, display_name, card)) in VOYADO.iter().zip(expected) {
            let value = parse_jsonc(text).unwrap();
            let t = parse_document(&value).unwrap();
            assert_eq!(t.id(), id);
            assert_eq!(t.display_name(), Some(display_name));
            // The document round-trips as posted, comments aside.
            assert_eq!(t.document(), &value);
            let mut got: Vec<_> = t
                .contact_card()
                .iter()
                .map(|f| (f.property.as_str(), f.display_name.as_str()))
                .collect();
            got.sort_unstable();
            assert_eq!(got, card, "{id}");
        }
    }

    #[test]
    fn voyado_events_obeyed() {
        obeyed(
            "wishlist",
            json!({"date": "2026-03-01T10:15:00Z", "productSku": "SKU-123"}),
        );
        obeyed(
            "wholeSalePurchase",
            json!({"date": "2026-03-01T10:15:00+01:00", "productSku": "A1", "pricePaid": 49.5, "source": "Reseller AB"}),
        );
        obeyed(
            "repair",
            json!({"registrationDate": "2026-02-10T08:00:00Z", "productModel": "Parka", "brand": "Acme",
               "productId": "P1", "storeName": "Main St", "storeId": "S1", "isFreeRepair": true}),
        );
        obeyed(
            "preownedProduct",
            json!({"date": "2026-03-01T10:15:00Z", "productSku": "J-9", "size": "M", "condition": "good",
               "storeDropOff": false, "reimbursement": 120, "storeName": "Main St", "storeId": "S1"}),
        );
        obeyed(
            "recycled",
            json!({"date": "2026-03-01T10:15:00Z", "dropOffPoint": "Store 5", "quantity": 3, "type": 2}),
        );
        // Every property is optional in these schemas, and extra ones are allowed.
        obeyed("wishlist", json!({}));
        obeyed("recycled", json!({"note": "bag of batteries"}));
    }

    #[test]
    fn voyado_events_violated() {
        let cases = [
            ("wishlist", json!({"date": "yesterday"}), "/date", "format"),
            ("wishlist", json!({"date": "2026-03-01"}), "/date", "format"),
            (
                "wishlist",
                json!({"productSku": 123}),
                "/productSku",
                "type",
            ),
            (
                "wholeSalePurchase",
                json!({"pricePaid": "49.5"}),
                "/pricePaid",
                "type",
            ),
            (
                "repair",
                json!({"isFreeRepair": "yes"}),
                "/isFreeRepair",
                "type",
            ),
            (
                "repair",
                json!({"registrationDate": "10/02/2026"}),
                "/registrationDate",
                "format",
            ),
            (
                "preownedProduct",
                json!({"storeDropOff": "true"}),
                "/storeDropOff",
                "type",
            ),
            (
                "recycled",
                json!({"quantity": "three"}),
                "/quantity",
                "type",
            ),
            ("recycled", json!({"type": "batteries"}), "/type", "type"),
        ];
        for (action, data, path, keyword) in cases {
            let v = violations(action, data.clone());
            assert_eq!(paths(&v), [(path, keyword)], "{action} {data}");
        }
        assert_eq!(
            paths(&violations("wishlist", json!([]))),
            [("", "type")],
            "data must be an object"
        );
    }

    #[test]
    fn every_violation_reported_violated() {
        let v = violations(
            "preownedProduct",
            json!({"date": "yesterday", "size": 38, "storeDropOff": "yes", "condition": "good"}),
        );
        let mut got = paths(&v);
        got.sort_unstable();
        assert_eq!(
            got,
            [
                ("/date", "format"),
                ("/size", "type"),
                ("/storeDropOff", "type")
            ]
        );
        let date = v.iter().find(|v| v.path == "/date").unwrap();
        assert!(
            date.message.contains("\"yesterday\"") && date.message.contains("date-time"),
            "{}",
            date.message
        );
    }

    #[test]
    fn contact_card_values_obeyed() {
        let t = parse_document(&parse_jsonc(REPAIR).unwrap()).unwrap();
        let values = t.contact_card_values(&json!({
            "brand": "Acme", "isFreeRepair": true, "storeId": null, "unrelated": 1
        }));
        let got: Vec<_> = values
            .iter()
            .map(|v| {
                (
                    v.property.as_str(),
                    v.display_name.as_str(),
                    v.value.clone(),
                )
            })
            .collect();
        let mut got = got;
        got.sort_by(|a, b| a.0.cmp(b.0));
        assert_eq!(
            got,
            [
                ("brand", "Brand", json!("Acme")),
                ("isFreeRepair", "Free repair", json!(true))
            ]
        );
    }

    #[test]
    fn antavo_checkout_as_it_stands_obeyed() {
        let event = antavo_checkout();
        assert_eq!(event["customer"], "374397439743");
        let action = event["action"].as_str().unwrap();
        let resolved = tenant(false).check_event(action, &event["data"]).unwrap();
        assert!(matches!(resolved, Resolved::Typed(t) if t.id() == "checkout" && t.is_builtin()));
    }

    #[test]
    fn checkout_total_violated() {
        let mut data = antavo_checkout()["data"].clone();
        data["total"] = json!("abc");
        let v = violations("checkout", data.clone());
        assert_eq!(paths(&v), [("/total", "pattern")]);
        assert!(
            v[0].message.contains("\"abc\" is not a number"),
            "{}",
            v[0].message
        );
        data["total"] = json!(true);
        let v = violations("checkout", data);
        assert_eq!(paths(&v), [("/total", "type")]);
        assert!(
            v[0].message.contains("got true (a boolean)"),
            "{}",
            v[0].message
        );
    }

    #[test]
    fn checkout_numbers_as_numbers_or_strings_obeyed() {
        obeyed("checkout", json!({"transaction_id": 5475, "total": 19.99}));
        obeyed(
            "checkout",
            json!({"transaction_id": "t1", "total": "-5.50"}),
        );
        // No total: derived from the items.
        obeyed(
            "checkout",
            json!({"transaction_id": "t1", "items": [{"product_id": 7, "price": "10", "quantity": 2}]}),
        );
    }

    #[test]
    fn checkout_required_violated() {
        let v = violations("checkout", json!({}));
        let mut got = paths(&v);
        got.sort_unstable();
        assert_eq!(
            got,
            [("/total", "required"), ("/transaction_id", "required")]
        );
        let total = v.iter().find(|v| v.path == "/total").unwrap();
        assert!(
            total.message.contains("non-empty \"items\""),
            "{}",
            total.message
        );
        // An empty items list does not stand in for the total.
        let v = violations("checkout", json!({"transaction_id": "t1", "items": []}));
        assert_eq!(paths(&v), [("/total", "required")]);
        let v = violations("checkout", json!({"transaction_id": ""}));
        let mut got = paths(&v);
        got.sort_unstable();
        assert_eq!(
            got,
            [("/total", "required"), ("/transaction_id", "minLength")]
        );
    }

    #[test]
    fn checkout_items_violated() {
        let v = violations(
            "checkout",
            json!({"transaction_id": "t1", "items": [
                {"price": "200"},
                {"price": "2x", "quantity": true, "product_id": {"a": 1}}
            ]}),
        );
        let mut got = paths(&v);
        got.sort_unstable();
        assert_eq!(
            got,
            [
                ("/items/1/price", "pattern"),
                ("/items/1/product_id", "type"),
                ("/items/1/quantity", "type")
            ]
        );
    }

    #[test]
    fn corrections_obeyed() {
        obeyed(
            "checkout_update",
            json!({"transaction_id": "5475-4343-4343-4343-3333", "total": "150"}),
        );
        obeyed(
            "checkout_reject",
            json!({"transaction_id": "5475-4343-4343-4343-3333"}),
        );
    }

    #[test]
    fn corrections_violated() {
        for action in ["checkout_update", "checkout_reject"] {
            assert_eq!(
                paths(&violations(action, json!({"total": "1"}))),
                [("/transaction_id", "required")]
            );
        }
    }

    #[test]
    fn points_obeyed() {
        for action in ["point_add", "point_sub"] {
            obeyed(action, json!({"points": 100}));
            obeyed(action, json!({"points": "100", "reason": "goodwill"}));
        }
        obeyed(
            "point_add",
            json!({"points": 5, "expires_at": "2027-01-01T00:00:00Z"}),
        );
    }

    #[test]
    fn points_violated() {
        for action in ["point_add", "point_sub"] {
            assert_eq!(
                paths(&violations(action, json!({}))),
                [("/points", "required")]
            );
            assert_eq!(
                paths(&violations(action, json!({"points": 0}))),
                [("/points", "minimum")]
            );
            assert_eq!(
                paths(&violations(action, json!({"points": 1.5}))),
                [("/points", "type")]
            );
            assert_eq!(
                paths(&violations(action, json!({"points": "-5"}))),
                [("/points", "pattern")]
            );
            assert_eq!(
                paths(&violations(action, json!({"points": "ten"}))),
                [("/points", "pattern")]
            );
        }
    }

    #[test]
    fn antavo_form_body_obeyed() {
        let event = form_to_json(ANTAVO_FORM_BODY).unwrap();
        assert_eq!(
            event,
            json!({
                "customer": "374397439743",
                "action": "checkout",
                "data": {
                    "transaction_id": "5475-4343-4343-4343-3333",
                    "total": "200",
                    "items": [{
                        "transaction_id": "5475-4343-4343-4343-3333",
                        "quantity": "1",
                        "price": "200",
                        "subtotal": "200",
                        "product_name": "Yellow T-Shirt",
                        "product_id": "TUFA-8888-94394-EN/XL/YELLOW",
                        "product_url": "https://example.com/yellow-t-shirt",
                        "product_category": "t-shirts"
                    }]
                }
            })
        );
        tenant(false)
            .check_event("checkout", &event["data"])
            .unwrap();
    }

    #[test]
    fn form_body_violated() {
        let err = form_to_json("customer=1&data%5Bitems%5D%5B1%5D%5Bprice%5D=200").unwrap_err();
        assert_eq!(err.code(), "invalid_form");
        assert!(
            err.to_string()
                .contains("`data[items]` has an entry [1] but no [0]"),
            "{err}"
        );
    }

    #[test]
    fn antavo_opt_in_csv_obeyed() {
        let events = csv_to_events(ANTAVO_OPT_IN_CSV).unwrap();
        let email = "[email\u{a0}protected]";
        assert_eq!(events.len(), 3);
        assert_eq!(
            events[1],
            json!({"id": "345454656512", "action": "opt_in", "customer": email,
               "data": {"email": email, "first_name": "Bill", "last_name": "Overback"}})
        );
        let types = tenant(false);
        for event in &events {
            types
                .check_event(event["action"].as_str().unwrap(), &event["data"])
                .unwrap();
        }
    }

    #[test]
    fn csv_malformed_row_violated() {
        let text = "_id,action,email\n1,opt_in,a@b.example\n2,opt_in,\"a, b\",extra\n";
        match csv_to_events(text).unwrap_err() {
            SchemaError::InvalidCsv { line, message } => {
                assert_eq!(line, 3);
                assert!(
                    message.contains("4 fields but the header names 3"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn typed_actions_only_violated() {
        let err = tenant(false).resolve("swim").unwrap_err();
        assert_eq!(err.code(), "unknown_action");
        let message = err.to_string();
        for id in BUILTIN_IDS.iter().chain(&[
            "wishlist",
            "wholeSalePurchase",
            "repair",
            "preownedProduct",
            "recycled",
        ]) {
            assert!(message.contains(id), "{id} missing from: {message}");
        }
    }

    #[test]
    fn untyped_when_allowed_obeyed() {
        let resolved = tenant(true)
            .check_event("swim", &json!({"meters": 1500}))
            .unwrap();
        assert!(matches!(resolved, Resolved::Untyped { action } if action == "swim"));
        // Typed actions stay typed.
        assert!(
            tenant(true)
                .check_event("repair", &json!({"isFreeRepair": 1}))
                .is_err()
        );
    }

    #[test]
    fn builtin_documents_are_ordinary_documents_obeyed() {
        for doc in builtin_documents() {
            let id = doc["id"].as_str().unwrap().to_owned();
            assert_eq!(
                doc["jsonSchema"]["$schema"],
                "https://json-schema.org/draft/2020-12/schema"
            );
            assert!(doc["displayName"].is_string(), "{id}");
            assert_eq!(builtin(&id).unwrap().document(), &doc);
            // The same document under a tenant's own id is accepted by the upload path.
            let mut copy = doc.clone();
            copy["id"] = json!(format!("my_{id}"));
            parse_document(&copy).unwrap();
        }
    }

    #[test]
    fn voyado_schema_with_another_draft_violated() {
        let text = WISHLIST.replace(
            "https://json-schema.org/draft/2020-12/schema",
            "http://json-schema.org/draft-07/schema#",
        );
        let err = parse_document(&parse_jsonc(&text).unwrap()).unwrap_err();
        assert_eq!(err.code(), "invalid_schema");
        assert!(err.to_string().contains("draft-07"), "{err}");
    }

    #[test]
    fn examples_are_verbatim_copies_of_the_seeds() {
        let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let Some(seeds) = manifest
            .ancestors()
            .map(|dir| dir.join("shared/seeds"))
            .find(|dir| dir.is_dir())
        else {
            eprintln!(
                "shared/seeds not found above {}; copies not compared",
                manifest.display()
            );
            return;
        };
        let read = |prefix: &str| {
            let entry = std::fs::read_dir(&seeds)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
                .unwrap();
            std::fs::read_to_string(entry).unwrap()
        };
        let voyado = read("000_");
        for text in VOYADO {
            assert!(voyado.contains(text), "not in seeds/000: {text}");
        }
        let antavo = read("002_");
        for text in [ANTAVO_CHECKOUT_MEMBERS, ANTAVO_FORM_BODY, ANTAVO_OPT_IN_CSV] {
            assert!(antavo.contains(text), "not in seeds/002: {text}");
        }
    }
}
