//! Builds the reference plugins and the test fixtures to `wasm32-unknown-unknown` with a
//! nested cargo, into a target directory of their own (so it never waits on the outer build's
//! lock), and copies each `.wasm` into `OUT_DIR` for `src/lib.rs` to embed.
//!
//! This runs as part of every normal build and test: no prebuilt wasm is committed.

#![allow(
    clippy::expect_used,
    reason = "a build script reports failure by panicking with the reason"
)]

use std::env;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugin crates built to wasm: the reference plugins, then the test fixtures.
const PLUGINS: &[&str] = &[
    "points",
    "tiers",
    "circular",
    "engagement",
    "birthday",
    "hostile",
];
const WASM_TARGET: &str = "wasm32-unknown-unknown";

/// Flags for the plugins' build.
///
/// A 128 KiB shadow stack instead of Rust's default 1 MiB. The stack sits at the bottom of
/// linear memory, so the initial memory is 3 pages instead of 17 and the host scans and
/// resets a smaller range after each evaluation, which makes instantiation cheaper.
/// serde_json's deepest input (128 levels, its recursion limit) needs about 33 KiB, so this
/// leaves a wide margin; runaway recursion still ends below address 0 and is reported as a
/// stack overflow. The initial memory is left at that: a larger `--initial-memory` (512 KiB,
/// 1 MiB), which spares `memory.grow` at run time, is no faster.
const WASM_RUSTFLAGS: &[&str] = &["-Clink-arg=-zstack-size=131072"];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .expect("plugin-wasm sits inside the workspace");
    for watched in ["sdk", "plugins", "Cargo.toml", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    ensure_wasm_target();

    // One nested target directory per checkout: a cdylib's output has no hash in its name
    // (`deps/points.wasm`), so two worktrees sharing CARGO_TARGET_DIR would otherwise copy
    // each other's plugins.
    let checkout = {
        let mut hasher = DefaultHasher::new();
        workspace.hash(&mut hasher);
        format!("wasm-plugins-{:08x}", hasher.finish() as u32)
    };
    let target_dir = match env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join(checkout),
        None => workspace.join("target").join("wasm-plugins"),
    };
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace)
        .args([
            "build",
            "--profile",
            "wasm",
            "--target",
            WASM_TARGET,
            "--target-dir",
        ])
        .arg(&target_dir);
    for plugin in PLUGINS {
        build.args(["-p", plugin]);
    }
    // The outer build's flags (coverage, sanitizers, a host target) must not reach the wasm
    // build; the jobserver (CARGO_MAKEFLAGS) is kept so both builds share the machine's cores.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        build.env_remove(var);
    }
    build.env("CARGO_ENCODED_RUSTFLAGS", WASM_RUSTFLAGS.join("\u{1f}"));
    let status = build
        .status()
        .expect("could not start cargo to build the wasm plugins");
    if !status.success() {
        panic!("building the wasm plugins failed ({status}); the error is above");
    }

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for plugin in PLUGINS {
        let built = target_dir
            .join(WASM_TARGET)
            .join("wasm")
            .join(format!("{plugin}.wasm"));
        let copied = out_dir.join(format!("{plugin}.wasm"));
        std::fs::copy(&built, &copied).unwrap_or_else(|error| {
            panic!(
                "copying {} to {}: {error}",
                built.display(),
                copied.display()
            )
        });
    }
}

/// A fresh machine may lack the wasm32 standard library. rust-toolchain.toml asks rustup for
/// it, but a build that bypasses rustup (a bare toolchain) still needs a clear way out.
fn ensure_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let installed = |sysroot: &Path| sysroot.join("lib/rustlib").join(WASM_TARGET).exists();
    if sysroot.as_deref().is_some_and(installed) {
        return;
    }
    let added = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status();
    if !matches!(added, Ok(status) if status.success())
        || !sysroot.as_deref().is_some_and(installed)
    {
        panic!(
            "the {WASM_TARGET} target is missing and could not be installed: run `rustup target add {WASM_TARGET}`"
        );
    }
}
