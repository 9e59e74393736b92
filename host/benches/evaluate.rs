//! What one plugin evaluation costs, side by side in one run: the `points` rule on a ~1 KB
//! Antavo-style checkout, evaluated
//!
//! - `native`: compiled natively and called through the SDK's own glue
//!   (`tally_sdk::__private::evaluate_json`), so the JSON in and out is the same as in wasm;
//! - `wasm_fresh_instance_fuel_on`: through the host, [`Plugin::evaluate_json`] with the
//!   default limits: a fresh store and instance, fuel metering, output decoded and checked;
//! - `wasm_fresh_instance_fuel_off`: the same with `Limits { fuel: None, .. }`;
//! - `instantiate_only`: a fresh store and instance created and dropped, the plugin never
//!   called: what the sandbox alone costs per evaluation.
//!
//! Criterion reports each; then a summary measures all four again, interleaved in rounds so
//! that load from other processes hits them alike, and prints medians and the ratios
//! (wasm / native, fuel on / fuel off). The figures and what is known to matter are in
//! `docs/performance.md`.
//!
//! Run: `cargo bench -p tally-host --bench evaluate`
//! (only the summary: `cargo bench -p tally-host --bench evaluate -- summary`; another build
//! of the plugin, e.g. with other flags: `TALLY_BENCH_POINTS_WASM=path/to/points.wasm`).

#![allow(
    clippy::expect_used,
    reason = "a benchmark: a broken setup should stop it loudly"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use serde_json::json;
use tally_host::runtime::{Limits, Plugin, Runtime};
use tally_sdk::{Customer, Points};

/// The input the host hands the plugin: a checkout of five items in Antavo's shape (the
/// total as a string, as Antavo sends it; its `data` is 1098 bytes of JSON), a silver
/// customer, the plugin's config and the state three earlier checkouts left: 1.8 KB in all.
fn checkout_input() -> Vec<u8> {
    let item = |id: &str, name: &str, slug: &str, quantity: &str, price: &str, subtotal: &str| {
        json!({
            "product_id": id,
            "product_name": name,
            "product_url": format!("https://shop.example.com/p/{slug}"),
            "quantity": quantity,
            "price": price,
            "subtotal": subtotal,
            "product_category": "apparel",
        })
    };
    let data = json!({
        "transaction_id": "5475-4343-4343-4343-3333",
        "total": "474.50",
        "items": [
            item("UFA-8888-94394-EN/38/YELLOW", "Yellow T-Shirt", "yellow-t-shirt", "2", "29.90", "59.80"),
            item("UFA-1204-11873-EN/40/BLUE", "Denim Jacket", "denim-jacket", "1", "189.00", "189.00"),
            item("UFA-5521-90017-EN/M/GREY", "Grey Hoodie", "grey-hoodie", "1", "79.90", "79.90"),
            item("UFA-7730-22410-EN/42/WHITE", "Sneakers", "sneakers", "1", "119.90", "119.90"),
            item("UFA-3310-55820-EN/OS/BLACK", "Socks", "socks", "3", "8.63", "25.90"),
        ],
    });
    let customer = Customer {
        id: "374397439743".to_owned(),
        points: Points {
            balance: 1_250,
            lifetime: 5_400,
            pending: 0,
        },
        tier: Some("silver".to_owned()),
        attributes:
            json!({"first_name": "John", "last_name": "Bates", "email": "john@example.com"})
                .as_object()
                .cloned()
                .expect("an object"),
        ..Customer::default()
    };
    let state = json!({
        "ids": ["5475-4343-4343-4343-3330", "5475-4343-4343-4343-3331", "5475-4343-4343-4343-3332"],
        "points": [23, 61, 7],
        "factors": ["0.125", "0.125", "0.125"],
    });
    let input = tally_sdk::testing::input("checkout", data)
        .event_id("01JDZ8Q4W7X3Y5K2M9N6P1R0ST")
        .customer(customer)
        .config(json!({
            "rate": 0.1,
            "tier_multipliers": {"silver": 1.25, "gold": 1.5},
            "expires_in_days": 365,
        }))
        .state(&state)
        .seed(0x5eed)
        .build();
    serde_json::to_vec(&input).expect("an input serializes")
}

/// The `points` plugin loaded into a runtime with `limits`.
fn points_plugin(limits: Limits) -> (Runtime, Plugin) {
    let runtime = Runtime::new(limits).expect("the engine starts");
    // Another build of the plugin (other flags, another SDK) can be compared by path.
    let other = std::env::var_os("TALLY_BENCH_POINTS_WASM")
        .map(|path| std::fs::read(path).expect("TALLY_BENCH_POINTS_WASM is a readable file"));
    let plugin = runtime
        .load(other.as_deref().unwrap_or(tally_plugin_wasm::POINTS.wasm))
        .expect("the points plugin loads");
    (runtime, plugin)
}

/// One run of each case, checked: a benchmark of a failing evaluation measures nothing.
fn check_cases(input: &[u8], fuel_on: &Plugin, fuel_off: &Plugin) {
    let native = tally_sdk::__private::evaluate_json(input, points::rule);
    let native: serde_json::Value = serde_json::from_slice(&native).expect("native output");
    assert_eq!(
        native["points"][0]["amount"], 59,
        "474.50 × 0.1 × 1.25 earns 59 points: {native}"
    );
    for plugin in [fuel_on, fuel_off] {
        let evaluation = plugin.evaluate_json(input);
        let decision = evaluation.result.expect("the wasm evaluation succeeds");
        assert_eq!(decision.points_total(), 59);
        assert_eq!(
            serde_json::to_value(&decision).expect("a decision serializes"),
            native,
            "wasm and native decide alike"
        );
        plugin.instantiate_only().expect("instantiation succeeds");
    }
}

/// The four cases, by name, as closures the summary and criterion share.
type Case<'a> = (&'static str, Box<dyn Fn() + 'a>);

fn cases<'a>(input: &'a [u8], fuel_on: &'a Plugin, fuel_off: &'a Plugin) -> Vec<Case<'a>> {
    vec![
        (
            "native",
            Box::new(move || {
                black_box(tally_sdk::__private::evaluate_json(
                    black_box(input),
                    points::rule,
                ));
            }),
        ),
        (
            "wasm_fresh_instance_fuel_on",
            Box::new(move || {
                black_box(fuel_on.evaluate_json(black_box(input)));
            }),
        ),
        (
            "wasm_fresh_instance_fuel_off",
            Box::new(move || {
                black_box(fuel_off.evaluate_json(black_box(input)));
            }),
        ),
        (
            "instantiate_only",
            Box::new(move || {
                black_box(fuel_on.instantiate_only()).expect("instantiation succeeds");
            }),
        ),
    ]
}

/// Medians of every case, measured in interleaved rounds: each round times a block of calls
/// of each case in turn, so a burst of load from another process falls on all of them.
fn summary(input: &[u8], cases: &[Case<'_>]) {
    const ROUNDS: usize = 30;
    const CALLS_PER_ROUND: usize = 500;
    let mut samples: Vec<Vec<Duration>> =
        vec![Vec::with_capacity(ROUNDS * CALLS_PER_ROUND); cases.len()];
    for (_, case) in cases {
        for _ in 0..CALLS_PER_ROUND {
            case();
        }
    }
    for _ in 0..ROUNDS {
        for ((_, case), samples) in cases.iter().zip(&mut samples) {
            for _ in 0..CALLS_PER_ROUND {
                let started = Instant::now();
                case();
                samples.push(started.elapsed());
            }
        }
    }
    let stats: Vec<(Duration, Duration, Duration)> = samples
        .iter_mut()
        .map(|samples| {
            samples.sort_unstable();
            let at = |fraction: f64| samples[((samples.len() - 1) as f64 * fraction) as usize];
            (at(0.5), at(0.1), at(0.9))
        })
        .collect();
    let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
    println!();
    println!(
        "summary: points plugin, {} byte input, {ROUNDS} interleaved rounds of {CALLS_PER_ROUND} calls per case",
        input.len()
    );
    println!(
        "{:<30} {:>10} {:>10} {:>10}",
        "case", "median µs", "p10 µs", "p90 µs"
    );
    for ((name, _), (median, p10, p90)) in cases.iter().zip(&stats) {
        println!(
            "{name:<30} {:>10.2} {:>10.2} {:>10.2}",
            micros(*median),
            micros(*p10),
            micros(*p90)
        );
    }
    let median = |name: &str| {
        cases
            .iter()
            .zip(&stats)
            .find(|((case, _), _)| *case == name)
            .map(|(_, (median, _, _))| micros(*median))
            .expect("a known case")
    };
    let native = median("native");
    let fuel_on = median("wasm_fresh_instance_fuel_on");
    let fuel_off = median("wasm_fresh_instance_fuel_off");
    println!("ratio wasm (fuel on) / native:  {:>6.2}", fuel_on / native);
    println!("ratio wasm (fuel off) / native: {:>6.2}", fuel_off / native);
    println!(
        "ratio fuel on / fuel off:       {:>6.2}",
        fuel_on / fuel_off
    );
    println!(
        "instantiate-only share of the fuel-on evaluation: {:.0}%",
        100.0 * median("instantiate_only") / fuel_on
    );
}

fn main() {
    let input = checkout_input();
    let (_runtime_on, fuel_on) = points_plugin(Limits::default());
    let (_runtime_off, fuel_off) = points_plugin(Limits {
        fuel: None,
        ..Limits::default()
    });
    check_cases(&input, &fuel_on, &fuel_off);
    let cases = cases(&input, &fuel_on, &fuel_off);

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for (name, case) in &cases {
        criterion
            .benchmark_group(*name)
            .bench_function("points_checkout_1kb", |bencher| bencher.iter(case));
    }
    criterion.final_summary();

    // Criterion runs each benchmark once under `cargo test --benches`; the summary is for
    // `cargo bench`, unfiltered or filtered to `summary`, and not under `--profile-time`.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|arg| arg == name);
    let filters: Vec<&String> = args.iter().filter(|arg| !arg.starts_with("--")).collect();
    let benchmarking = flag("--bench") && !flag("--test") && !flag("--list");
    let profiling = flag("--profile-time");
    if benchmarking && !profiling && filters.iter().all(|filter| *filter == "summary") {
        summary(&input, &cases);
    }
    // Again after thousands of evaluations: reused pool slots must still decide the same.
    check_cases(&input, &fuel_on, &fuel_off);
}
