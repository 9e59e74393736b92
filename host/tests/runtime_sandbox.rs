//! The plugin sandbox, tested with real wasm: the `hostile` fixture and the reference
//! plugins built from `plugins/` by `tally-plugin-wasm`, and hand-written WAT modules for
//! breakage the SDK never produces. Every misbehaviour must end in its own precise error,
//! and the runtime must go on serving the next evaluation.
//!
//! Run: `cargo test -p tally-host --test runtime_sandbox`

#![allow(
    clippy::expect_used,
    reason = "tests fail loudly on a broken expectation"
)]

use std::time::Duration;

use serde_json::{Value, json};
use tally_host::domain::records::{CustomerRecord, OnError};
use tally_host::domain::{CustomerId, EventId, NewEvent, Policy, TenantId, new_account};
use tally_host::pipeline::{PluginCall, PluginResult, evaluate_event_reporting};
use tally_host::runtime::{EvalError, Evaluation, Limits, LoadError, LogLine, Plugin, Runtime};
use tally_plugin_wasm::HOSTILE;
use tally_sdk::{Customer, Input, Perk, Points, RawJson, Stats, Timestamp};

fn runtime_with(limits: Limits) -> Runtime {
    Runtime::new(limits).expect("the engine starts")
}

fn runtime() -> Runtime {
    runtime_with(Limits::default())
}

fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid WAT")
}

fn hostile(runtime: &Runtime) -> Plugin {
    runtime
        .load(HOSTILE.wasm)
        .expect("the hostile fixture loads: it misbehaves only when run")
}

fn input_for(mode: Value) -> Input {
    tally_sdk::testing::input("checkout", json!({"total": "200"}))
        .config(mode)
        .seed(42)
        .build()
}

fn run_mode(plugin: &Plugin, mode: &str) -> Evaluation {
    plugin.evaluate(&input_for(json!({"mode": mode})))
}

fn error_of(evaluation: Evaluation) -> EvalError {
    evaluation.result.expect_err("the evaluation should fail")
}

/// A module that implements the ABI in WAT and answers exactly `output` from a data
/// segment, every byte escaped.
fn wat_answering(output: &str) -> Vec<u8> {
    let escaped: String = output.bytes().map(|byte| format!("\\{byte:02x}")).collect();
    wat(&format!(
        r#"(module
            (memory (export "memory") 1)
            (data (i32.const 0) "{escaped}")
            (func (export "tally_abi_version") (result i32) (i32.const 1))
            (func (export "tally_alloc") (param i32) (result i32) (i32.const 4096))
            (func (export "tally_evaluate") (param i32 i32) (result i64) (i64.const {len})))"#,
        len = output.len()
    ))
}

#[test]
fn handwritten_wat_plugin_follows_the_abi_without_the_sdk() {
    let runtime = runtime();
    let plugin = runtime
        .load(&wat(include_str!("fixtures/handwritten.wat")))
        .expect("a valid ABI v1 module");
    let evaluation = plugin.evaluate(&input_for(Value::Null));
    let decision = evaluation.result.expect("a decision");
    assert_eq!(decision.points_total(), 7);
    assert_eq!(decision.points[0].reason, "handwritten");
    assert_eq!(evaluation.logs.len(), 1);
    assert_eq!(evaluation.logs[0].message, "hello from WAT");
    assert_eq!(evaluation.logs[0].level, 1);
}

/// `docs/abi.md`, the ABI as a contract for plugins in any language. The `the_abi_doc_*`
/// tests run its WAT module and its examples through the real runtime and pipeline, so the
/// page cannot drift from what the host does.
const ABI_DOC: &str = include_str!("../../docs/abi.md");

/// The text of every fenced block of `ABI_DOC` whose info string is `info` (`wat`,
/// `json input`, `json output`).
fn abi_doc_blocks(info: &str) -> Vec<&'static str> {
    let mut blocks = Vec::new();
    let mut open: Option<usize> = None;
    let mut at = 0;
    for line in ABI_DOC.split_inclusive('\n') {
        let fence = line.trim_end();
        match open {
            None if fence.strip_prefix("```") == Some(info) => open = Some(at + line.len()),
            Some(start) if fence == "```" => {
                blocks.push(&ABI_DOC[start..at]);
                open = None;
            }
            _ => {}
        }
        at += line.len();
    }
    assert!(
        open.is_none(),
        "a ```{info} block of docs/abi.md is not closed"
    );
    blocks
}

/// `json` without the whitespace between its tokens, as the host writes JSON.
fn without_whitespace(json: &str) -> String {
    let (mut compact, mut in_string, mut escaped) = (String::new(), false, false);
    for c in json.chars() {
        if in_string {
            compact.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            compact.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            compact.push(c);
        }
    }
    compact
}

/// The event, account, config and state of the input example in `docs/abi.md`.
fn abi_doc_example() -> (NewEvent, CustomerRecord, RawJson, RawJson) {
    let object = |value: Value| value.as_object().cloned().expect("an object");
    let at = |text: &str| text.parse::<Timestamp>().expect("a timestamp");
    let customer_id = CustomerId::parse("374397439743").expect("a customer id");
    let event = NewEvent {
        tenant: TenantId::parse("acme").expect("a tenant id"),
        id: EventId::parse("evt-1001").expect("an event id"),
        action: "checkout".to_owned(),
        label: Some("Checkout".to_owned()),
        customer: customer_id.clone(),
        timestamp: at("2026-11-23T10:00:00Z"),
        source: "api".to_owned(),
        ip_address: None,
        user_agent: None,
        data: RawJson::from_value(
            &json!({"items": [{"price": "200", "quantity": 1, "sku": "A1"}], "total": "200"}),
        ),
        received_at: at("2026-11-23T10:00:00Z"),
        contact_card: Vec::new(),
        due: None,
        interaction: Default::default(),
    };
    let customer = Customer {
        id: "374397439743".to_owned(),
        points: Points {
            balance: 120,
            lifetime: 900,
            pending: 0,
        },
        tier: Some("silver".to_owned()),
        perks: vec![Perk::new("coupon", "WELCOME10")],
        member: true,
        attributes: object(json!({"email": "ada@example.com"})),
        stats: Stats {
            events: [("checkout".to_owned(), 4)].into_iter().collect(),
            first_event_at: Some(at("2026-01-05T09:00:00Z")),
            last_event_at: Some(at("2026-11-20T17:30:00Z")),
        },
    };
    let account = CustomerRecord {
        customer,
        ..new_account(&customer_id, at("2026-01-05T09:00:00Z"))
    };
    let config = RawJson::from_value(&json!({"rate": 0.1}));
    let state = RawJson::from_value(&json!({"purchases_this_year": 4}));
    (event, account, config, state)
}

/// Runs `plugin` as version 3 of `points` of tenant `acme` on the input example of
/// `docs/abi.md`, through the pipeline the host runs: its result, and the input it got.
fn run_abi_doc_example(plugin: &Plugin) -> (PluginResult, String) {
    let (event, account, config, state) = abi_doc_example();
    let call = PluginCall {
        name: "points",
        version: 3,
        plugin: Ok(plugin),
        config: Some(&config),
        state: Some(&state),
        on_error: OnError::Skip,
    };
    let mut written = String::new();
    let mut evaluation =
        evaluate_event_reporting(Policy::default(), &event, &account, &[call], |_, input| {
            written = String::from_utf8(input.to_vec()).expect("the host writes UTF-8");
        })
        .expect("a readable event");
    let result = evaluation.runs.results.pop().expect("one plugin ran");
    (result, written)
}

#[test]
fn the_abi_doc_wat_module_runs_as_documented() {
    let runtime = runtime();
    let modules = abi_doc_blocks("wat");
    assert!(!modules.is_empty(), "docs/abi.md shows a WAT module");
    for module in modules {
        let plugin = runtime
            .load(&wat(module))
            .expect("the module of docs/abi.md is a valid ABI v1 plugin");
        let (result, _) = run_abi_doc_example(&plugin);
        let decision = result.outcome.expect("a decision");
        assert_eq!(decision.points_total(), 7);
        assert_eq!(decision.points[0].reason, "handwritten");
        assert_eq!(
            decision.state.as_ref().map(RawJson::to_value),
            Some(json!({"seen": true}))
        );
        assert_eq!(
            result.logs,
            [LogLine {
                level: 1,
                message: "hello from WAT".to_owned()
            }]
        );
        // Anything but a JSON object is refused in the plugin's own words.
        let refused = plugin.evaluate_json(b"[1]").result;
        assert_eq!(
            refused,
            Err(EvalError::Refused {
                message: "input is not a JSON object".to_owned()
            })
        );
    }
}

#[test]
fn the_abi_doc_input_example_is_what_the_host_writes() {
    let runtime = runtime();
    let plugin = runtime
        .load(&wat(abi_doc_blocks("wat")[0]))
        .expect("a valid module");
    let (_, written) = run_abi_doc_example(&plugin);
    let examples = abi_doc_blocks("json input");
    assert_eq!(examples.len(), 1, "docs/abi.md has one input example");
    assert_eq!(
        without_whitespace(examples[0]),
        written,
        "the input example of docs/abi.md, without its indentation, is byte for byte what the host writes"
    );
}

#[test]
fn the_abi_doc_output_examples_are_what_the_host_accepts() {
    let runtime = runtime();
    let examples = abi_doc_blocks("json output");
    assert!(examples.len() >= 2, "a decision and an error");
    for example in examples {
        let plugin = runtime.load(&wat_answering(example)).expect("valid");
        let result = plugin.evaluate(&input_for(Value::Null)).result;
        let value: Value = serde_json::from_str(example).expect("JSON");
        match value.get("error").and_then(Value::as_str) {
            Some(message) => assert_eq!(
                result,
                Err(EvalError::Refused {
                    message: message.to_owned()
                }),
                "{example}"
            ),
            None => {
                let decision = result.unwrap_or_else(|error| panic!("{example}: {error}"));
                assert!(!decision.points.is_empty(), "{example}");
            }
        }
    }
}

/// The code of `error`; the match names every variant, so a new one does not compile until
/// it is added to the list below (and to docs/abi.md).
fn eval_error_code(error: &EvalError) -> &'static str {
    match error {
        EvalError::Refused { .. }
        | EvalError::OutOfFuel { .. }
        | EvalError::Deadline { .. }
        | EvalError::MemoryLimit { .. }
        | EvalError::StackOverflow
        | EvalError::Panic { .. }
        | EvalError::Trap { .. }
        | EvalError::InputTooLarge { .. }
        | EvalError::OutputTooLarge { .. }
        | EvalError::StateTooLarge { .. }
        | EvalError::BadOutput { .. }
        | EvalError::DecisionRule { .. }
        | EvalError::Host { .. } => error.code(),
    }
}

#[test]
fn the_abi_doc_names_every_error_code_and_limit() {
    let text = String::new;
    let every_eval_error = [
        EvalError::Refused { message: text() },
        EvalError::OutOfFuel { budget: 0 },
        EvalError::Deadline { limit_ms: 0 },
        EvalError::MemoryLimit {
            requested: 0,
            limit: 0,
        },
        EvalError::StackOverflow,
        EvalError::Panic { message: text() },
        EvalError::Trap { trap: text() },
        EvalError::InputTooLarge { size: 0, limit: 0 },
        EvalError::OutputTooLarge { size: 0, limit: 0 },
        EvalError::StateTooLarge { size: 0, limit: 0 },
        EvalError::BadOutput { reason: text() },
        EvalError::DecisionRule { reason: text() },
        EvalError::Host { reason: text() },
    ];
    let load_errors = [
        LoadError::TooLarge { size: 0, limit: 0 },
        LoadError::Invalid { reason: text() },
        LoadError::Refused {
            problems: Vec::new(),
        },
    ];
    let codes = every_eval_error
        .iter()
        .map(eval_error_code)
        .chain(load_errors.iter().map(LoadError::code));
    for code in codes {
        assert!(
            ABI_DOC.contains(&format!("| `{code}` |")),
            "docs/abi.md explains the error code {code} in a table row"
        );
    }

    let grouped = |number: u64| {
        let digits = number.to_string();
        let mut out = String::new();
        for (index, digit) in digits.chars().enumerate() {
            if index > 0 && (digits.len() - index).is_multiple_of(3) {
                out.push(',');
            }
            out.push(digit);
        }
        out
    };
    let size = |bytes: usize| match bytes {
        bytes if bytes.is_multiple_of(1 << 20) => format!("{} MiB", bytes >> 20),
        bytes => format!("{} KiB", bytes >> 10),
    };
    let limits = Limits::default();
    let table = [
        ("fuel", grouped(limits.fuel.expect("metered by default"))),
        (
            "wall-clock deadline",
            format!("{} ms", limits.deadline.as_millis()),
        ),
        ("linear memory", size(limits.memory_bytes)),
        ("input JSON", size(limits.max_input_bytes)),
        ("output JSON", size(limits.max_output_bytes)),
        ("new state", size(limits.max_state_bytes)),
        ("log text", size(limits.max_log_bytes)),
        ("module size", size(limits.max_module_bytes)),
    ];
    for (limit, default) in table {
        let row = ABI_DOC
            .lines()
            .find(|line| line.starts_with(&format!("| {limit}")))
            .unwrap_or_else(|| panic!("docs/abi.md has a row for the {limit} limit"));
        assert!(
            row.contains(&format!("| {default}")),
            "docs/abi.md gives the {limit} limit its default, {default}: {row}"
        );
    }
    for rule in [
        grouped(tally_sdk::wire::MAX_DECISION_ENTRIES as u64),
        grouped(tally_sdk::wire::MAX_POINTS_AMOUNT),
        grouped(tally_sdk::wire::MAX_NAME_LEN as u64),
    ] {
        assert!(
            ABI_DOC.contains(&format!("**{rule}**")),
            "docs/abi.md states the decision limit {rule}"
        );
    }
}

#[test]
fn each_evaluation_gets_a_fresh_instance() {
    let runtime = runtime();
    // The WAT plugin answers "stale instance" if its global counter survived a call.
    let plugin = runtime
        .load(&wat(include_str!("fixtures/handwritten.wat")))
        .expect("valid");
    for _ in 0..3 {
        let decision = plugin
            .evaluate(&input_for(Value::Null))
            .result
            .expect("a decision");
        assert_eq!(decision.points[0].reason, "handwritten");
    }
    // The same through the SDK: a static counter is 1 on every evaluation.
    let hostile = hostile(&runtime);
    for _ in 0..3 {
        let decision = run_mode(&hostile, "global").result.expect("a decision");
        assert_eq!(decision.triggers[0].name, "Counter");
        assert_eq!(decision.triggers[0].data.to_value()["value"], 1);
    }
}

#[test]
fn the_same_input_gives_the_same_output() {
    let runtime = runtime();
    let plugin = hostile(&runtime);
    let first = run_mode(&plugin, "echo").result.expect("a decision");
    let second = run_mode(&plugin, "echo").result.expect("a decision");
    assert_eq!(first, second);
}

#[test]
fn a_plugin_error_is_the_plugins_own_message() {
    let runtime = runtime();
    let error = error_of(run_mode(&hostile(&runtime), "error"));
    assert_eq!(
        error,
        EvalError::Refused {
            message: "refused on purpose".into()
        }
    );
    assert_eq!(error.code(), "plugin_error");
}

#[test]
fn a_panic_is_reported_with_its_message() {
    let runtime = runtime();
    match error_of(run_mode(&hostile(&runtime), "panic")) {
        EvalError::Panic { message } => assert!(message.contains("boom on purpose"), "{message}"),
        other => panic!("expected a panic, got {other:?}"),
    }
}

#[test]
fn fuel_limit_obeyed() {
    let runtime = runtime();
    let evaluation = run_mode(&hostile(&runtime), "ok");
    let used = evaluation.fuel_used.expect("fuel is metered by default");
    assert!(
        used > 0 && used < Limits::default().fuel.expect("default fuel"),
        "used {used}"
    );
    assert_eq!(evaluation.result.expect("a decision").points_total(), 1);
}

#[test]
fn fuel_limit_violated() {
    let runtime = runtime_with(Limits {
        fuel: Some(5_000_000),
        ..Limits::default()
    });
    let error = error_of(run_mode(&hostile(&runtime), "loop"));
    assert_eq!(error, EvalError::OutOfFuel { budget: 5_000_000 });
    assert_eq!(error.code(), "out_of_fuel");
}

#[test]
fn deadline_obeyed() {
    let runtime = runtime_with(Limits {
        fuel: None,
        deadline: Duration::from_millis(50),
        ..Limits::default()
    });
    let evaluation = run_mode(&hostile(&runtime), "ok");
    assert!(evaluation.result.is_ok());
    assert_eq!(evaluation.fuel_used, None, "fuel is off on this runtime");
}

#[test]
fn deadline_violated() {
    // Without fuel, only the epoch deadline can stop the loop.
    let runtime = runtime_with(Limits {
        fuel: None,
        deadline: Duration::from_millis(50),
        ..Limits::default()
    });
    let evaluation = run_mode(&hostile(&runtime), "loop");
    assert!(
        evaluation.elapsed >= Duration::from_millis(50),
        "stopped after {:?}",
        evaluation.elapsed
    );
    assert_eq!(error_of(evaluation), EvalError::Deadline { limit_ms: 50 });
}

#[test]
fn memory_limit_obeyed() {
    let runtime = runtime_with(Limits {
        memory_bytes: 4 << 20,
        ..Limits::default()
    });
    assert!(
        run_mode(&hostile(&runtime), "ok").result.is_ok(),
        "a normal rule fits in 4 MiB"
    );
}

#[test]
fn memory_limit_violated() {
    let runtime = runtime_with(Limits {
        memory_bytes: 4 << 20,
        ..Limits::default()
    });
    match error_of(run_mode(&hostile(&runtime), "grow")) {
        EvalError::MemoryLimit { requested, limit } => {
            assert_eq!(limit, 4 << 20);
            assert!(requested > limit);
        }
        other => panic!("expected the memory limit, got {other:?}"),
    }
    // A raw memory.grow loop in WAT hits the same cap.
    let bomb = wat(r#"(module
        (memory (export "memory") 1)
        (func (export "tally_abi_version") (result i32) (i32.const 1))
        (func (export "tally_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "tally_evaluate") (param i32 i32) (result i64)
          (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
          unreachable))"#);
    let error = error_of(
        runtime
            .load(&bomb)
            .expect("valid")
            .evaluate(&input_for(Value::Null)),
    );
    assert_eq!(error.code(), "memory_limit", "{error}");
}

/// A plugin whose growth is refused, that ignores the refusal and answers: `answer`
/// is what it returns, packed as `(ptr << 32) | len`, after trying to grow past the cap.
fn refused_then_answers(answer: &str) -> Vec<u8> {
    wat(&format!(
        r#"(module
        (memory (export "memory") 1)
        (data (i32.const 1024) "{{\"points\": []}}")
        (func (export "tally_abi_version") (result i32) (i32.const 1))
        (func (export "tally_alloc") (param i32) (result i32) (i32.const 4096))
        (func (export "tally_evaluate") (param i32 i32) (result i64)
          (drop (memory.grow (i32.const 1000)))
          {answer}))"#
    ))
}

#[test]
fn a_refused_growth_is_the_cause_violated() {
    let runtime = runtime_with(Limits {
        memory_bytes: 4 << 20,
        ..Limits::default()
    });
    // It returns nothing at all, then a decision that does not decode, then one that does:
    // each failure is reported as the memory limit, not as what it looked like.
    for answer in ["(i64.const 0)", "(i64.const 0x0000040000000005)"] {
        let module = refused_then_answers(answer);
        let error = error_of(
            runtime
                .load(&module)
                .expect("valid")
                .evaluate(&input_for(Value::Null)),
        );
        match error {
            EvalError::MemoryLimit { requested, limit } => {
                assert_eq!(limit, 4 << 20);
                assert!(requested > limit, "{requested}");
            }
            other => panic!("{answer}: expected the memory limit, got {other:?}"),
        }
    }
}

#[test]
fn a_refused_growth_is_the_cause_obeyed() {
    let runtime = runtime_with(Limits {
        memory_bytes: 4 << 20,
        ..Limits::default()
    });
    // A plugin that was refused but still answers well has its decision taken.
    let module = refused_then_answers("(i64.const 0x000004000000000e)");
    let evaluation = runtime
        .load(&module)
        .expect("valid")
        .evaluate(&input_for(Value::Null));
    assert!(evaluation.result.is_ok(), "{:?}", evaluation.result);
}

#[test]
fn deep_recursion_is_a_stack_overflow() {
    let runtime = runtime();
    assert_eq!(
        error_of(run_mode(&hostile(&runtime), "recurse")),
        EvalError::StackOverflow
    );
}

#[test]
fn output_limit_obeyed() {
    let runtime = runtime();
    let decision = run_mode(&hostile(&runtime), "echo")
        .result
        .expect("a small output");
    assert_eq!(decision.triggers[0].name, "Echo");
}

#[test]
fn output_limit_violated() {
    let runtime = runtime();
    // Just above the 1 MiB cap: serde_json in the guest costs fuel per byte, and a far
    // larger output would run out of fuel before it was ever written.
    let input = input_for(json!({"mode": "huge_output", "size": 1_100_000}));
    match error_of(hostile(&runtime).evaluate(&input)) {
        EvalError::OutputTooLarge { size, limit } => {
            assert!(size > 1_100_000);
            assert_eq!(limit, Limits::default().max_output_bytes);
        }
        other => panic!("expected an oversized output, got {other:?}"),
    }
}

#[test]
fn input_limit_violated() {
    let runtime = runtime_with(Limits {
        max_input_bytes: 64,
        ..Limits::default()
    });
    let error = error_of(run_mode(&hostile(&runtime), "ok"));
    assert_eq!(error.code(), "input_too_large", "{error}");
}

#[test]
fn state_limit_obeyed() {
    let runtime = runtime();
    let decision = run_mode(&hostile(&runtime), "echo")
        .result
        .expect("a small state fits");
    assert!(decision.state.is_some());
}

#[test]
fn state_limit_violated() {
    let runtime = runtime_with(Limits {
        max_state_bytes: 4,
        ..Limits::default()
    });
    match error_of(run_mode(&hostile(&runtime), "echo")) {
        EvalError::StateTooLarge { size, limit } => assert!(size > limit && limit == 4),
        other => panic!("expected an oversized state, got {other:?}"),
    }
}

#[test]
fn log_limit_keeps_the_first_lines_and_says_it_dropped_the_rest() {
    let runtime = runtime();
    let evaluation = run_mode(&hostile(&runtime), "log");
    assert!(evaluation.logs_truncated);
    let kept: usize = evaluation.logs.iter().map(|line| line.message.len()).sum();
    assert!(
        kept <= Limits::default().max_log_bytes && kept > 0,
        "kept {kept} bytes"
    );
    assert!(evaluation.result.is_ok(), "a chatty plugin still decides");
}

#[test]
fn output_that_is_not_json_is_bad_output() {
    let runtime = runtime();
    let plugin = runtime.load(&wat_answering("not json")).expect("valid");
    let error = error_of(plugin.evaluate(&input_for(Value::Null)));
    assert_eq!(error.code(), "bad_output", "{error}");
}

#[test]
fn output_with_a_fractional_point_amount_names_the_field() {
    let runtime = runtime();
    let plugin = runtime
        .load(&wat_answering(
            r#"{"points":[{"amount":20.5,"reason":"x"}]}"#,
        ))
        .expect("valid");
    match error_of(plugin.evaluate(&input_for(Value::Null))) {
        EvalError::BadOutput { reason } => {
            assert!(reason.starts_with("points[0].amount: "), "{reason}")
        }
        other => panic!("expected bad output, got {other:?}"),
    }
}

#[test]
fn output_outside_memory_is_bad_output() {
    let runtime = runtime();
    let plugin = runtime
        .load(&wat(r#"(module
            (memory (export "memory") 1)
            (func (export "tally_abi_version") (result i32) (i32.const 1))
            (func (export "tally_alloc") (param i32) (result i32) (i32.const 0))
            ;; 100 bytes at 0xFFFFFF00: far past the single 64 KiB page
            (func (export "tally_evaluate") (param i32 i32) (result i64) (i64.const 0xFFFFFF00_00000064)))"#))
        .expect("valid");
    let error = error_of(plugin.evaluate(&input_for(Value::Null)));
    assert!(
        matches!(&error, EvalError::BadOutput { reason } if reason.contains("outside the plugin's memory")),
        "{error}"
    );
}

#[test]
fn decision_rules_violated() {
    let runtime = runtime();
    match error_of(run_mode(&hostile(&runtime), "bad_decision")) {
        EvalError::DecisionRule { reason } => {
            assert!(reason.contains("points[0].amount is 0"), "{reason}")
        }
        other => panic!("expected a broken decision rule, got {other:?}"),
    }
}

#[test]
fn the_runtime_keeps_serving_after_every_failure() {
    let runtime = runtime_with(Limits {
        fuel: Some(5_000_000),
        memory_bytes: 8 << 20,
        ..Limits::default()
    });
    let plugin = hostile(&runtime);
    for mode in [
        "loop",
        "grow",
        "recurse",
        "panic",
        "huge_output",
        "bad_decision",
        "error",
    ] {
        assert!(
            run_mode(&plugin, mode).result.is_err(),
            "{mode} should fail"
        );
        let after = run_mode(&plugin, "ok")
            .result
            .unwrap_or_else(|error| panic!("after {mode}: {error}"));
        assert_eq!(after.points_total(), 1, "after {mode}");
    }
}

#[test]
fn a_wasi_import_is_refused_at_load() {
    let module = wat(r#"(module
        (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "tally_abi_version") (result i32) (i32.const 1))
        (func (export "tally_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "tally_evaluate") (param i32 i32) (result i64) (i64.const 0)))"#);
    let error = runtime().load(&module).expect_err("WASI is refused");
    assert_eq!(error.code(), "invalid_plugin");
    let message = error.to_string();
    assert!(
        message.contains("import wasi_snapshot_preview1.fd_write is WASI"),
        "{message}"
    );
}

#[test]
fn an_unknown_host_function_is_refused_at_load() {
    let module = wat(r#"(module
        (import "tally" "clock" (func (result i64)))
        (memory (export "memory") 1)
        (func (export "tally_abi_version") (result i32) (i32.const 1))
        (func (export "tally_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "tally_evaluate") (param i32 i32) (result i64) (i64.const 0)))"#);
    let message = runtime().load(&module).expect_err("refused").to_string();
    assert!(
        message.contains("import tally.clock is not a host function"),
        "{message}"
    );
}

#[test]
fn missing_exports_are_each_named() {
    let module = wat(
        r#"(module (memory (export "memory") 1) (func (export "tally_abi_version") (result i32) (i32.const 1)))"#,
    );
    match runtime().load(&module).expect_err("refused") {
        LoadError::Refused { problems } => {
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with("missing export tally_alloc")),
                "{problems:?}"
            );
            assert!(
                problems
                    .iter()
                    .any(|p| p.starts_with("missing export tally_evaluate")),
                "{problems:?}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn an_export_with_the_wrong_type_is_refused() {
    let module = wat(r#"(module
        (memory (export "memory") 1)
        (func (export "tally_abi_version") (result i32) (i32.const 1))
        (func (export "tally_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "tally_evaluate") (param i32 i32) (result i32) (i32.const 0)))"#);
    let message = runtime().load(&module).expect_err("refused").to_string();
    assert!(message.contains("export tally_evaluate has type func(i32, i32) -> i32, but ABI v1 needs func(i32, i32) -> i64"), "{message}");
}

#[test]
fn an_unknown_abi_version_is_refused() {
    let module = wat(r#"(module
        (memory (export "memory") 1)
        (func (export "tally_abi_version") (result i32) (i32.const 2))
        (func (export "tally_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "tally_evaluate") (param i32 i32) (result i64) (i64.const 0)))"#);
    let message = runtime().load(&module).expect_err("refused").to_string();
    assert!(
        message.contains("tally_abi_version returned 2, but this host speaks ABI version 1"),
        "{message}"
    );
}

#[test]
fn a_start_function_that_loops_is_refused_in_bounded_time() {
    let module = wat(r#"(module
        (memory (export "memory") 1)
        (func $spin (loop $forever (br $forever)))
        (start $spin)
        (func (export "tally_abi_version") (result i32) (i32.const 1))
        (func (export "tally_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "tally_evaluate") (param i32 i32) (result i64) (i64.const 0)))"#);
    let message = runtime().load(&module).expect_err("refused").to_string();
    assert!(
        message.contains("calling tally_abi_version failed"),
        "{message}"
    );
}

#[test]
fn bytes_that_are_not_wasm_are_invalid() {
    let error = runtime()
        .load(b"\0asm but not really")
        .expect_err("refused");
    assert!(matches!(error, LoadError::Invalid { .. }), "{error}");
    assert_eq!(error.code(), "invalid_plugin");
}

#[test]
fn module_size_limit_violated() {
    let runtime = runtime_with(Limits {
        max_module_bytes: 1024,
        ..Limits::default()
    });
    let error = runtime.load(HOSTILE.wasm).expect_err("too large");
    assert!(
        matches!(error, LoadError::TooLarge { limit: 1024, .. }),
        "{error}"
    );
}

#[test]
fn inspect_describes_a_module_it_would_refuse() {
    let module =
        wat(r#"(module (import "env" "now" (func (result i64))) (memory (export "memory") 2))"#);
    let report = runtime().inspect(&module).expect("inspectable");
    assert_eq!(report.imports[0].module, "env");
    assert_eq!(report.imports[0].ty, "func() -> i64");
    assert_eq!(report.initial_memory_bytes, 2 * 65536);
    assert_eq!(
        report.abi_version, None,
        "not called on a module that breaks the ABI"
    );
    assert_eq!(report.problems.len(), 4, "{:?}", report.problems);
}

#[test]
fn compiled_artifacts_survive_a_restart() {
    let dir = tempfile::tempdir().expect("a temp dir");
    {
        let runtime = Runtime::with_cache_dir(Limits::default(), dir.path()).expect("starts");
        runtime.load(HOSTILE.wasm).expect("loads");
    }
    let artifacts: Vec<_> = std::fs::read_dir(dir.path()).expect("readable").collect();
    assert_eq!(artifacts.len(), 1, "one artifact for one module");
    let runtime = Runtime::with_cache_dir(Limits::default(), dir.path()).expect("starts again");
    let plugin = runtime.load(HOSTILE.wasm).expect("loads from the artifact");
    assert_eq!(
        run_mode(&plugin, "ok").result.expect("runs").points_total(),
        1
    );
}

#[test]
fn a_corrupt_artifact_is_recompiled() {
    let dir = tempfile::tempdir().expect("a temp dir");
    Runtime::with_cache_dir(Limits::default(), dir.path())
        .expect("starts")
        .load(HOSTILE.wasm)
        .expect("loads");
    for artifact in std::fs::read_dir(dir.path()).expect("readable") {
        std::fs::write(artifact.expect("an entry").path(), b"garbage").expect("writable");
    }
    let runtime = Runtime::with_cache_dir(Limits::default(), dir.path()).expect("starts");
    let plugin = runtime.load(HOSTILE.wasm).expect("recompiles");
    assert!(run_mode(&plugin, "ok").result.is_ok());
}
