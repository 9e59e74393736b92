//! `tally eval` and `tally plugin check`, run as the real binary on the real reference
//! plugins, the way a plugin author uses them.

#![allow(
    clippy::expect_used,
    reason = "tests fail loudly on a broken expectation"
)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use tally_plugin_wasm::{HOSTILE, POINTS, TIERS};

fn tally(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .output()
        .expect("the tally binary runs")
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not JSON ({error}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("writable temp dir");
    path.to_string_lossy().into_owned()
}

const ANTAVO_CHECKOUT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/examples/events/antavo-checkout.json"
);

/// `tally eval` of points, then tiers, on the Antavo checkout, with `extra` arguments.
fn eval_points_then_tiers(extra: &[&str]) -> Output {
    let mut args = vec![
        "eval",
        "--plugin",
        POINTS.path,
        "--plugin",
        TIERS.path,
        "--event",
        ANTAVO_CHECKOUT,
    ];
    args.extend_from_slice(extra);
    tally(&args)
}

#[test]
fn eval_runs_plugins_in_order_on_the_antavo_checkout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let customer = write(
        dir.path(),
        "customer.json",
        r#"{"points": {"balance": 400, "lifetime": 1900}, "tier": "silver"}"#,
    );
    let output = eval_points_then_tiers(&["--customer", &customer]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = json_of(&output);
    // "total": "200" as a string, at the default rate of 1 point per unit.
    assert_eq!(report["decision"]["points"][0]["amount"], 200);
    // tiers ran after points and saw lifetime 1900 + 200: gold.
    assert_eq!(report["customer"]["points"]["lifetime"], 2100);
    assert_eq!(report["customer"]["tier"], "gold");
    assert_eq!(report["decision"]["triggers"][0]["name"], "TierEarned");
    assert_eq!(report["event"]["customer"], "374397439743");
}

#[test]
fn eval_shows_each_plugins_input_as_the_host_writes_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = write(
        dir.path(),
        "state.json",
        r#"{"ids": ["A-1"], "points": [5], "factors": ["1"]}"#,
    );
    let run = |extra: &[&str]| {
        let mut args = vec!["--state", state.as_str()];
        args.extend_from_slice(extra);
        json_of(&eval_points_then_tiers(&args))
    };

    let report = run(&["--show-input"]);
    let inputs: Vec<&str> = report["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .map(|plugin| plugin["input"].as_str().expect("the input, as text"))
        .collect();
    assert_eq!(inputs.len(), 2);
    let points: Value = serde_json::from_str(inputs[0]).expect("JSON");
    let tiers: Value = serde_json::from_str(inputs[1]).expect("JSON");
    assert_eq!(points["plugin"]["name"], "points");
    assert_eq!(tiers["plugin"]["name"], "tiers");
    // Each text's length just before it, as the SDK's reader takes it.
    let data = serde_json::to_string(&points["event"]["data"]).expect("JSON");
    assert!(
        inputs[0].contains(&format!(r#""data_bytes":{},"data":{data}"#, data.len())),
        "{}",
        inputs[0]
    );
    // The state file's text as it is (the host keeps a stored state's text verbatim).
    let remembered = r#"{"ids": ["A-1"], "points": [5], "factors": ["1"]}"#;
    assert!(
        inputs[0].contains(&format!(
            r#""state_bytes":{},"state":{remembered}"#,
            remembered.len()
        )),
        "{}",
        inputs[0]
    );
    // tiers gets the customer as points left them: the checkout's 200 points applied.
    assert_eq!(points["customer"]["points"]["lifetime"], 0);
    assert_eq!(tiers["customer"]["points"]["lifetime"], 200);

    // Without the flag the report is as it was.
    let report = run(&[]);
    assert!(report["plugins"][0].get("input").is_none(), "{report}");
}

#[test]
fn eval_gives_an_event_without_id_or_timestamp_both() {
    let dir = tempfile::tempdir().expect("temp dir");
    let event = write(
        dir.path(),
        "event.json",
        r#"{"customer": "c1", "action": "checkout", "data": {"transaction_id": "t1", "total": 10}}"#,
    );
    let report = json_of(&tally(&[
        "eval",
        "--plugin",
        POINTS.path,
        "--event",
        &event,
    ]));
    assert!(
        report["event"]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("evt_"))
    );
    assert!(
        report["event"]["timestamp"]
            .as_str()
            .is_some_and(|at| at.ends_with('Z'))
    );
}

#[test]
fn eval_config_and_state_pair_with_plugins_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write(dir.path(), "config.json", r#"{"rate": 0.5}"#);
    let state = write(
        dir.path(),
        "state.json",
        r#"{"transactions": [{"id": "5475-4343-4343-4343-3333", "points": 100, "factor": "0.5"}]}"#,
    );
    let reject = write(
        dir.path(),
        "reject.json",
        r#"{"customer": "c1", "action": "checkout_reject", "data": {"transaction_id": "5475-4343-4343-4343-3333"}}"#,
    );
    // The customer still holds what the remembered checkout earned.
    let customer = write(
        dir.path(),
        "customer.json",
        r#"{"id": "c1", "points": {"balance": 100, "lifetime": 100}}"#,
    );
    let eval = |config: &str, extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--plugin",
            POINTS.path,
            "--event",
            &reject,
            "--config",
            config,
            "--state",
            &state,
        ];
        args.extend_from_slice(extra);
        tally(&args)
    };
    let report = json_of(&eval(&config, &["--customer", &customer]));
    assert_eq!(
        report["decision"]["points"][0]["amount"], -100,
        "the reversal of what the state remembers"
    );
    assert_eq!(report["decision"]["points"][0]["kind"], "reverse");
    assert_eq!(report["customer"]["points"]["balance"], 0);

    // A new customer has nothing to take back: `points` takes back no more than the balance.
    let capped = json_of(&eval(&config, &[]));
    assert!(capped["decision"]["points"].is_null(), "{capped}");
    // A plugin that would go below zero is refused by the host's own rule, unless the tenant
    // allows a negative balance.
    let uncapped = write(
        dir.path(),
        "uncapped.json",
        r#"{"rate": 0.5, "allow_negative_balance": true}"#,
    );
    let refused = eval(&uncapped, &[]);
    assert_eq!(refused.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&refused.stdout).expect("a JSON report");
    assert_eq!(report["plugins"][0]["error"]["code"], "insufficient_points");
    let allowed = json_of(&eval(&uncapped, &["--allow-negative-balance"]));
    assert_eq!(allowed["customer"]["points"]["balance"], -100);
}

#[test]
fn eval_reports_a_failing_plugin_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write(dir.path(), "config.json", r#"{"mode": "panic"}"#);
    let output = tally(&[
        "eval",
        "--plugin",
        HOSTILE.path,
        "--event",
        ANTAVO_CHECKOUT,
        "--config",
        &config,
    ]);
    assert_eq!(output.status.code(), Some(1));
    let report = json_of(&output);
    assert_eq!(report["plugins"][0]["error"]["code"], "panic");
    assert!(
        report["plugins"][0]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("boom on purpose"))
    );
}

#[test]
fn eval_refuses_bad_arguments_with_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let no_customer = write(
        dir.path(),
        "event.json",
        r#"{"action": "checkout", "data": {}}"#,
    );
    let output = tally(&["eval", "--plugin", POINTS.path, "--event", &no_customer]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("the event has no customer"));
    let not_json = write(dir.path(), "bad.json", "{nope");
    let output = tally(&["eval", "--plugin", POINTS.path, "--event", &not_json]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not valid JSON"));
}

#[test]
fn plugin_check_accepts_a_reference_plugin() {
    let output = tally(&["plugin", "check", POINTS.path]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains(": accepted"), "{text}");
    assert!(text.contains("tally.log: func(i32, i32, i32)"), "{text}");
    assert!(
        text.contains("tally_evaluate: func(i32, i32) -> i64"),
        "{text}"
    );
}

#[test]
fn plugin_check_says_why_it_would_refuse() {
    let dir = tempfile::tempdir().expect("temp dir");
    let module = wat::parse_str(r#"(module (import "wasi_snapshot_preview1" "random_get" (func (param i32 i32) (result i32))) (memory (export "memory") 1))"#)
        .expect("valid WAT");
    let path = dir.path().join("wasi.wasm");
    std::fs::write(&path, module).expect("writable");
    let output = tally(&["plugin", "check", "--json", &path.to_string_lossy()]);
    assert_eq!(output.status.code(), Some(1));
    let report = json_of(&output);
    let problems = report["problems"].as_array().expect("a list of problems");
    assert!(problems.iter().any(|p| {
        p.as_str()
            .is_some_and(|p| p.contains("wasi_snapshot_preview1.random_get is WASI"))
    }));
    assert!(problems.iter().any(|p| {
        p.as_str()
            .is_some_and(|p| p.contains("missing export tally_evaluate"))
    }));
}
