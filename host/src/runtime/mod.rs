//! The sandbox that runs one plugin evaluation.
//!
//! One [`Engine`] and one [`Linker`] are built once per [`Runtime`]; every module is
//! validated against the ABI and compiled once ([`Runtime::load`]), then pre-linked into an
//! [`InstancePre`]. Every evaluation gets a fresh [`Store`] and a fresh instance from the
//! pooling allocator, so nothing leaks between events or customers. The limits of an
//! evaluation live in the store's data: fuel, an epoch deadline, a memory cap enforced by
//! our [`ResourceLimiter`], and caps on input, output, state and logs.
//!
//! Every way a plugin can fail becomes an [`EvalError`] with a stable code, matched from
//! wasmtime's typed [`Trap`]s, never from error strings.

mod cache;
mod error;
mod inspect;
mod limits;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tally_sdk::{Decision, Output};
use wasmtime::{
    Caller, Config, Enabled, Engine, Extern, InstancePre, Linker, Module, ModuleExport, OptLevel,
    PoolingAllocationConfig, ResourceLimiter, Store, Trap, TypedFunc, WasmBacktrace,
};

pub use error::{EvalError, LoadError};
pub use inspect::{Item, ModuleReport};
pub use limits::Limits;

use cache::ArtifactCache;

/// How often the epoch advances: the resolution of the wall-clock deadline.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Fuel for calling `tally_abi_version` and running start functions at load.
const LOAD_FUEL: u64 = 1_000_000;

/// Runs plugins. Cheap to share: clone the [`Plugin`]s it loads, not the runtime.
#[derive(Debug)]
pub struct Runtime {
    shared: Arc<Shared>,
    linker: Linker<Sandbox>,
    cache: ArtifactCache,
}

/// What every plugin of a runtime needs after load; the epoch ticker stops when the last
/// holder drops.
#[derive(Debug)]
struct Shared {
    engine: Engine,
    limits: Limits,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// A runtime with `limits` and no on-disk artifact cache.
    pub fn new(limits: Limits) -> Result<Runtime, LoadError> {
        Runtime::build(limits, None)
    }

    /// A runtime that keeps compiled artifacts in `dir`, so a restart does not recompile.
    pub fn with_cache_dir(limits: Limits, dir: impl Into<PathBuf>) -> Result<Runtime, LoadError> {
        Runtime::build(limits, Some(dir.into()))
    }

    fn build(limits: Limits, cache_dir: Option<PathBuf>) -> Result<Runtime, LoadError> {
        let engine = Engine::new(&engine_config(&limits))
            .map_err(|error| LoadError::Host(error.to_string()))?;
        let mut linker = Linker::new(&engine);
        linker
            .func_wrap("tally", "log", host_log)
            .map_err(|error| LoadError::Host(error.to_string()))?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_epoch_ticker(engine.clone(), ticker_stop.clone());
        let cache = ArtifactCache::new(cache_dir);
        Ok(Runtime {
            shared: Arc::new(Shared {
                engine,
                limits,
                ticker_stop,
            }),
            linker,
            cache,
        })
    }

    /// The limits every evaluation of this runtime's plugins runs under.
    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// Describes a module and lists every reason it would be refused, without refusing it:
    /// what `tally plugin check` prints.
    pub fn inspect(&self, wasm: &[u8]) -> Result<ModuleReport, LoadError> {
        let limits = &self.shared.limits;
        if wasm.len() > limits.max_module_bytes {
            return Err(LoadError::TooLarge {
                size: wasm.len(),
                limit: limits.max_module_bytes,
            });
        }
        let sha256: [u8; 32] = Sha256::digest(wasm).into();
        let module = self
            .cache
            .get_or_compile(&self.shared.engine, &sha256, wasm)?;
        let (imports, exports, initial_memory_bytes, mut problems) =
            inspect::check_shape(&module, limits.memory_bytes);
        let mut abi_version = None;
        if problems.is_empty() {
            match self.call_abi_version(&module) {
                Ok(version) => {
                    abi_version = Some(version);
                    if version != tally_sdk::ABI_VERSION {
                        problems.push(format!(
                            "tally_abi_version returned {version}, but this host speaks ABI version {}",
                            tally_sdk::ABI_VERSION
                        ));
                    }
                }
                Err(why) => problems.push(format!("calling tally_abi_version failed: {why}")),
            }
        }
        Ok(ModuleReport {
            size: wasm.len(),
            sha256: hex::encode(sha256),
            imports,
            exports,
            abi_version,
            initial_memory_bytes,
            problems,
        })
    }

    /// Validates a module against the ABI, compiles it (or takes it from the cache) and
    /// prepares it for fast instantiation.
    pub fn load(&self, wasm: &[u8]) -> Result<Plugin, LoadError> {
        let report = self.inspect(wasm)?;
        if !report.problems.is_empty() {
            return Err(LoadError::Refused {
                problems: report.problems,
            });
        }
        let sha256: [u8; 32] = Sha256::digest(wasm).into();
        let module = self
            .cache
            .get_or_compile(&self.shared.engine, &sha256, wasm)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|error| LoadError::Host(error.to_string()))?;
        let export = |name: &str| {
            module
                .get_export_index(name)
                .ok_or_else(|| LoadError::Host(format!("export {name} vanished after validation")))
        };
        let exports = Exports {
            memory: export("memory")?,
            alloc: export("tally_alloc")?,
            evaluate: export("tally_evaluate")?,
        };
        Ok(Plugin {
            shared: self.shared.clone(),
            pre,
            exports,
            sha256: report.sha256,
        })
    }

    fn call_abi_version(&self, module: &Module) -> Result<i32, String> {
        let mut store = self.new_store(Some(LOAD_FUEL));
        let instance = self
            .linker
            .instantiate(&mut store, module)
            .map_err(|error| describe_trap(&error))?;
        let version: TypedFunc<(), i32> = instance
            .get_typed_func(&mut store, "tally_abi_version")
            .map_err(|error| error.to_string())?;
        version
            .call(&mut store, ())
            .map_err(|error| describe_trap(&error))
    }

    fn new_store(&self, fuel: Option<u64>) -> Store<Sandbox> {
        new_store(&self.shared, fuel)
    }
}

fn new_store(shared: &Shared, fuel: Option<u64>) -> Store<Sandbox> {
    let limits = &shared.limits;
    let mut store = Store::new(&shared.engine, Sandbox::new(limits));
    store.limiter(|sandbox| &mut sandbox.memory);
    if let Some(fuel) = fuel.filter(|_| limits.fuel.is_some()) {
        // Cannot fail: fuel is enabled on this engine exactly when `limits.fuel` is set.
        let _ = store.set_fuel(fuel);
    }
    store.set_epoch_deadline(deadline_ticks(limits.deadline));
    store
}

fn deadline_ticks(deadline: Duration) -> u64 {
    // One extra tick: the first tick may come right after the store is made.
    (deadline.as_nanos() / EPOCH_TICK.as_nanos()) as u64 + 1
}

/// Memory a pool slot keeps resident between evaluations, reset in place instead of being
/// given back to the kernel: more than an evaluation of a rule on a few-kilobyte event
/// dirties (tens of pages), so those pages are never faulted in again.
const KEEP_RESIDENT_BYTES: usize = 1 << 20;

fn engine_config(limits: &Limits) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_core_instances(limits.max_instances)
        .total_memories(limits.max_instances)
        .total_tables(limits.max_instances)
        // A plugin has one memory and one table; anything else is refused at validation.
        .max_memories_per_module(1)
        .max_tables_per_module(1)
        .max_memory_size(limits.memory_bytes)
        // Freeing a slot's pages one madvise at a time makes the kernel flush TLBs on every
        // evaluation; batching the decommits amortizes that. With the resident reset below
        // little is left to decommit, but memory past KEEP_RESIDENT_BYTES (a big input) still
        // is.
        .decommit_batch_size(16);
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        // Linux 6.7+: after an evaluation the kernel's PAGEMAP_SCAN lists the pages the
        // instance wrote, and only those are reset (copied back from the module's image or
        // zeroed) and stay mapped: no madvise, no TLB-flush IPIs, and no page faults when the
        // next instance touches them. The table (funcref slots, filled lazily as the guest
        // makes indirect calls) likewise. This is most of what keeps a fresh instance per
        // evaluation cheap.
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES);
    }
    // Without PAGEMAP_SCAN, keeping memory resident means memsetting that much of every slot
    // whether it was touched or not (1 MiB costs more than it saves), so the kernel
    // decommits as before. `max_unused_warm_slots` and `memory_init_cow` stay at their
    // defaults: other values are no faster (CoW off is slower).

    let mut config = Config::new();
    config
        .allocation_strategy(pool)
        .consume_fuel(limits.fuel.is_some())
        .epoch_interruption(true)
        .cranelift_opt_level(OptLevel::Speed)
        // Same input, same output on every machine: NaN bit patterns are made canonical.
        .cranelift_nan_canonicalization(true)
        // Plugins have a 32-bit memory, which keeps bounds checks in the guard pages.
        .wasm_memory64(false)
        // Modules come from tenants and are compiled on upload; use both cores for it.
        .parallel_compilation(true);
    // Wasm threads stay off: wasmtime is built without its `threads` feature, because shared
    // memory would let an instance outlive its evaluation.
    config
}

fn spawn_epoch_ticker(engine: Engine, stop: Arc<AtomicBool>) {
    // A detached thread: it ends on its own within a tick of the runtime being dropped.
    let spawned = thread::Builder::new()
        .name("tally-epoch".to_owned())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        });
    if let Err(error) = spawned {
        // Without the ticker the fuel budget still stops a runaway plugin.
        tracing::error!(%error, "could not start the epoch ticker; plugin deadlines are not enforced");
    }
}

/// The exports an evaluation calls, resolved once at load.
#[derive(Clone)]
struct Exports {
    memory: ModuleExport,
    alloc: ModuleExport,
    evaluate: ModuleExport,
}

/// A validated, compiled plugin module, ready to evaluate. Cheap to clone and to share
/// between threads.
#[derive(Clone)]
pub struct Plugin {
    shared: Arc<Shared>,
    pre: InstancePre<Sandbox>,
    exports: Exports,
    sha256: String,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// One log line a plugin wrote during an evaluation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    /// 0 debug, 1 info, 2 warn, 3 error, 4 fatal.
    pub level: i32,
    /// The text, lossily decoded as UTF-8.
    pub message: String,
}

/// The result of one evaluation with what it cost.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The checked decision, or why there is none.
    pub result: Result<Decision, EvalError>,
    /// What the plugin logged, up to the log cap.
    pub logs: Vec<LogLine>,
    /// True when log lines were dropped at the cap.
    pub logs_truncated: bool,
    /// Instructions used, when fuel is metered.
    pub fuel_used: Option<u64>,
    /// Wall-clock time of the evaluation.
    pub elapsed: Duration,
}

impl Plugin {
    /// SHA-256 of the module, hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Evaluates one input: a [`tally_sdk::Input`], or anything that serializes as one.
    pub fn evaluate(&self, input: &impl serde::Serialize) -> Evaluation {
        match serde_json::to_vec(input) {
            Ok(json) => self.evaluate_json(&json),
            Err(error) => Evaluation {
                result: Err(EvalError::Host {
                    reason: format!("the input could not be serialized: {error}"),
                }),
                logs: Vec::new(),
                logs_truncated: false,
                fuel_used: None,
                elapsed: Duration::ZERO,
            },
        }
    }

    /// Creates a store and an instance as [`Plugin::evaluate_json`] does, and drops them
    /// without calling the plugin: what the sandbox alone costs, for `benches/evaluate.rs`.
    #[doc(hidden)]
    pub fn instantiate_only(&self) -> Result<(), EvalError> {
        let mut store = new_store(&self.shared, self.shared.limits.fuel);
        self.pre
            .instantiate(&mut store)
            .map(drop)
            .map_err(|error| EvalError::Host {
                reason: error.to_string(),
            })
    }

    /// Evaluates one input given as JSON bytes, in a fresh instance.
    pub fn evaluate_json(&self, input: &[u8]) -> Evaluation {
        let started = Instant::now();
        let limits = &self.shared.limits;
        let mut store = new_store(&self.shared, limits.fuel);
        let result = self.run(&mut store, input).map_err(|error| {
            // A plugin refused memory may go on and fail in any way (return nothing, a
            // truncated output, its own error): the refusal is the cause to report.
            match store.data().memory.denied {
                Some(requested) => EvalError::MemoryLimit {
                    requested,
                    limit: limits.memory_bytes,
                },
                None => error,
            }
        });
        let fuel_used = limits
            .fuel
            .map(|budget| budget.saturating_sub(store.get_fuel().unwrap_or(0)));
        let sandbox = store.into_data();
        Evaluation {
            result,
            logs: sandbox.logs,
            logs_truncated: sandbox.logs_truncated,
            fuel_used,
            elapsed: started.elapsed(),
        }
    }

    fn run(&self, store: &mut Store<Sandbox>, input: &[u8]) -> Result<Decision, EvalError> {
        let limits = &self.shared.limits;
        if input.len() > limits.max_input_bytes {
            return Err(EvalError::InputTooLarge {
                size: input.len(),
                limit: limits.max_input_bytes,
            });
        }
        let trapped = |error: wasmtime::Error, store: &mut Store<Sandbox>| {
            classify(&error, store.data(), limits)
        };
        let instance = self.pre.instantiate(&mut *store).map_err(|error| {
            match error.downcast_ref::<Trap>() {
                Some(_) => trapped(error, store),
                // Not a trap: the pool is full or the host is out of memory. Not the plugin's fault.
                None => EvalError::Host {
                    reason: error.to_string(),
                },
            }
        })?;
        let (Some(Extern::Memory(memory)), Some(Extern::Func(alloc)), Some(Extern::Func(evaluate))) = (
            instance.get_module_export(&mut *store, &self.exports.memory),
            instance.get_module_export(&mut *store, &self.exports.alloc),
            instance.get_module_export(&mut *store, &self.exports.evaluate),
        ) else {
            return Err(EvalError::Host {
                reason: "the plugin's exports changed after validation".to_owned(),
            });
        };
        let abi_mismatch = |error: wasmtime::Error| EvalError::Host {
            reason: error.to_string(),
        };
        let alloc: TypedFunc<i32, i32> = alloc.typed(&*store).map_err(abi_mismatch)?;
        let evaluate: TypedFunc<(i32, i32), i64> = evaluate.typed(&*store).map_err(abi_mismatch)?;

        // Input sizes are capped far below 2 GiB, so the length fits an i32.
        let input_len = input.len() as i32;
        let input_ptr = alloc
            .call(&mut *store, input_len)
            .map_err(|error| trapped(error, store))?;
        memory.write(&mut *store, input_ptr as u32 as usize, input).map_err(|_| EvalError::BadOutput {
            reason: format!("tally_alloc({input_len}) returned {input_ptr:#x}, which is not room inside the plugin's memory"),
        })?;
        let packed = evaluate
            .call(&mut *store, (input_ptr, input_len))
            .map_err(|error| trapped(error, store))?;

        // The ABI packs (out_ptr << 32) | out_len into an i64: split it as unsigned halves.
        let (out_ptr, out_len) = (
            (packed as u64 >> 32) as usize,
            (packed as u64 & 0xFFFF_FFFF) as usize,
        );
        if out_len > limits.max_output_bytes {
            return Err(EvalError::OutputTooLarge {
                size: out_len,
                limit: limits.max_output_bytes,
            });
        }
        let output = memory.data(&*store).get(out_ptr..out_ptr + out_len).ok_or_else(|| EvalError::BadOutput {
            reason: format!(
                "tally_evaluate returned {out_len} bytes at {out_ptr:#x}, outside the plugin's memory of {} bytes",
                memory.data_size(&*store)
            ),
        })?;
        decode_output(output, limits)
    }
}

/// Reads and checks a plugin's output: a decision that keeps the rules, or its error.
fn decode_output(output: &[u8], limits: &Limits) -> Result<Decision, EvalError> {
    // The plain read is the common case; tracking the field path costs as much again, so only
    // an output that fails is read a second time, with the path, for the message.
    let decoded: Output = match serde_json::from_slice(output) {
        Ok(decoded) => decoded,
        Err(_) => return Err(describe_bad_output(output)),
    };
    let decision = match decoded {
        Output::Error(message) => return Err(EvalError::Refused { message }),
        Output::Decision(decision) => decision,
    };
    decision
        .check()
        .map_err(|violation| EvalError::DecisionRule {
            reason: violation.0,
        })?;
    if let Some(state) = &decision.state {
        let size = state.get().len();
        if size > limits.max_state_bytes {
            return Err(EvalError::StateTooLarge {
                size,
                limit: limits.max_state_bytes,
            });
        }
    }
    Ok(decision)
}

/// Why an output that did not decode is bad, naming the field path where there is one.
#[cold]
fn describe_bad_output(output: &[u8]) -> EvalError {
    let mut deserializer = serde_json::Deserializer::from_slice(output);
    let decoded: Result<Output, _> = serde_path_to_error::deserialize(&mut deserializer);
    let reason = match decoded {
        Err(error) => {
            let path = error.path().to_string();
            if path == "." {
                error.inner().to_string()
            } else {
                format!("{path}: {}", error.inner())
            }
        }
        // Only trailing characters are left to fail on.
        Ok(_) => match deserializer.end() {
            Err(error) => error.to_string(),
            Ok(()) => "the output could not be read".to_owned(),
        },
    };
    EvalError::BadOutput { reason }
}

/// Maps a failed call to its typed error: wasmtime's [`Trap`] first, then what the sandbox
/// saw (a denied memory growth, a panic message).
fn classify(error: &wasmtime::Error, sandbox: &Sandbox, limits: &Limits) -> EvalError {
    if let Some(requested) = sandbox.memory.denied {
        return EvalError::MemoryLimit {
            requested,
            limit: limits.memory_bytes,
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => EvalError::OutOfFuel {
            budget: limits.fuel.unwrap_or(0),
        },
        Some(Trap::Interrupt) => EvalError::Deadline {
            limit_ms: limits.deadline.as_millis() as u64,
        },
        Some(Trap::StackOverflow) => EvalError::StackOverflow,
        Some(Trap::MemoryOutOfBounds) if is_runaway_recursion(error) => EvalError::StackOverflow,
        Some(trap) => match &sandbox.panic {
            Some(message) => EvalError::Panic {
                message: message.clone(),
            },
            None => EvalError::Trap {
                trap: trap.to_string(),
            },
        },
        None => match error.downcast_ref::<AbiViolation>() {
            Some(violation) => EvalError::BadOutput {
                reason: violation.0.clone(),
            },
            None => EvalError::Trap {
                trap: error.to_string(),
            },
        },
    }
}

/// A Rust (or C) guest keeps its frames' locals on a shadow stack at the bottom of linear
/// memory; runaway recursion drives that stack pointer below address 0, and the next store
/// lands far outside memory. So an out-of-bounds access whose backtrace is one function
/// calling itself over and over is a stack overflow, not a wild pointer.
fn is_runaway_recursion(error: &wasmtime::Error) -> bool {
    let Some(backtrace) = error.downcast_ref::<WasmBacktrace>() else {
        return false;
    };
    let frames = backtrace.frames();
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for frame in frames {
        *counts.entry(frame.func_index()).or_default() += 1;
    }
    let most_repeated = counts.values().copied().max().unwrap_or(0);
    // wasmtime keeps the innermost 20 frames by default: a recursion fills them all.
    most_repeated >= 8 && most_repeated * 2 >= frames.len()
}

fn describe_trap(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => format!("it used more than {LOAD_FUEL} instructions"),
        Some(trap) => trap.to_string(),
        None => error.to_string(),
    }
}

/// A plugin broke the ABI in a host call (e.g. a log range outside its memory).
#[derive(Debug)]
struct AbiViolation(String);

impl std::fmt::Display for AbiViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AbiViolation {}

/// The store's data: what one evaluation may use and what it left behind.
#[derive(Debug)]
struct Sandbox {
    memory: MemoryCap,
    logs: Vec<LogLine>,
    log_bytes: usize,
    max_log_bytes: usize,
    logs_truncated: bool,
    panic: Option<String>,
}

impl Sandbox {
    fn new(limits: &Limits) -> Sandbox {
        Sandbox {
            memory: MemoryCap {
                limit: limits.memory_bytes,
                denied: None,
            },
            logs: Vec::new(),
            log_bytes: 0,
            max_log_bytes: limits.max_log_bytes,
            logs_truncated: false,
            panic: None,
        }
    }
}

/// Refuses memory growth past the cap and remembers that it did, so the trap that follows
/// (a Rust guest aborts when allocation fails) is reported as the memory limit.
#[derive(Debug)]
struct MemoryCap {
    limit: usize,
    denied: Option<usize>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.denied = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|maximum| desired <= maximum))
    }
}

/// `tally.log(level, ptr, len)`: keeps the line, up to the evaluation's log cap.
fn host_log(
    mut caller: Caller<'_, Sandbox>,
    level: i32,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<()> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Err(wasmtime::Error::new(AbiViolation(
            "tally.log called by a module without a memory".to_owned(),
        )));
    };
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    let (data, sandbox) = memory.data_and_store_mut(&mut caller);
    let Some(bytes) = data.get(start..start.saturating_add(len)) else {
        return Err(wasmtime::Error::new(AbiViolation(format!(
            "tally.log was given {len} bytes at {start:#x}, outside the plugin's memory of {} bytes",
            data.len()
        ))));
    };
    let message = String::from_utf8_lossy(bytes).into_owned();
    if level == tally_sdk::log::Level::Fatal as i32 {
        // Kept apart from the capped log: it is the reason the trap that follows will give.
        sandbox.panic = Some(message.clone());
    }
    if sandbox.log_bytes + message.len() > sandbox.max_log_bytes {
        sandbox.logs_truncated = true;
        return Ok(());
    }
    sandbox.log_bytes += message.len();
    sandbox.logs.push(LogLine { level, message });
    Ok(())
}
