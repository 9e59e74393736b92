//! Checks a compiled module against plugin ABI v1 and describes it: what `tally plugin
//! check` prints and why an upload is refused come from the same report.

use serde::Serialize;
use wasmtime::{ExternType, FuncType, Module, ValType};

/// The host functions a plugin may import, all in the module namespace `tally`.
pub(super) const HOST_FUNCTIONS: &[(&str, &[ValType], &[ValType])] =
    &[("log", &[ValType::I32, ValType::I32, ValType::I32], &[])];

/// The exports ABI v1 requires, with their function types (`memory` is checked apart).
const REQUIRED_FUNCTIONS: &[(&str, &[ValType], &[ValType])] = &[
    ("tally_alloc", &[ValType::I32], &[ValType::I32]),
    (
        "tally_evaluate",
        &[ValType::I32, ValType::I32],
        &[ValType::I64],
    ),
    ("tally_abi_version", &[], &[ValType::I32]),
];

/// One import or export of a module, as `tally plugin check` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// For imports, the module namespace; empty for exports.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub module: String,
    /// The name.
    pub name: String,
    /// The type, e.g. `func(i32, i32) -> i64` or `memory(17 pages)`.
    #[serde(rename = "type")]
    pub ty: String,
}

/// What a module is and whether the host would run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleReport {
    /// Size of the module in bytes.
    pub size: usize,
    /// SHA-256 of the module, hex.
    pub sha256: String,
    /// Its imports.
    pub imports: Vec<Item>,
    /// Its exports.
    pub exports: Vec<Item>,
    /// What `tally_abi_version` returned, when it could be called.
    pub abi_version: Option<i32>,
    /// Initial linear memory in bytes.
    pub initial_memory_bytes: u64,
    /// Every reason the host would refuse it; empty when it is accepted.
    pub problems: Vec<String>,
}

/// Lists the module's imports and exports and every way they break ABI v1.
pub(super) fn check_shape(
    module: &Module,
    memory_limit: usize,
) -> (Vec<Item>, Vec<Item>, u64, Vec<String>) {
    let mut problems = Vec::new();
    let mut imports = Vec::new();
    for import in module.imports() {
        let ty = import.ty();
        imports.push(Item {
            module: import.module().to_owned(),
            name: import.name().to_owned(),
            ty: describe(&ty),
        });
        let wanted = HOST_FUNCTIONS
            .iter()
            .find(|(name, _, _)| import.module() == "tally" && *name == import.name());
        match (wanted, &ty) {
            (Some((name, params, results)), ExternType::Func(func)) => {
                if !signature_is(func, params, results) {
                    problems.push(format!(
                        "import tally.{name} has type {}, but the host provides {}",
                        describe(&ty),
                        signature(params, results)
                    ));
                }
            }
            (Some((name, _, _)), _) => problems.push(format!("import tally.{name} must be a function, found {}", describe(&ty))),
            (None, _) if import.module() == "tally" => problems.push(format!(
                "import tally.{} is not a host function; the host offers {}",
                import.name(),
                offered()
            )),
            (None, _) if import.module().starts_with("wasi") => problems.push(format!(
                "import {}.{} is WASI, which plugins cannot use (no clock, files or network): build for wasm32-unknown-unknown",
                import.module(),
                import.name()
            )),
            (None, _) => problems.push(format!(
                "import {}.{} is not allowed: plugins may only import {}",
                import.module(),
                import.name(),
                offered()
            )),
        }
    }

    let mut exports = Vec::new();
    let mut initial_memory_bytes = 0;
    for export in module.exports() {
        exports.push(Item {
            module: String::new(),
            name: export.name().to_owned(),
            ty: describe(&export.ty()),
        });
    }
    match module.get_export("memory") {
        Some(ExternType::Memory(memory)) => {
            if memory.is_64() {
                problems.push(
                    "export memory is a 64-bit memory; plugins use a 32-bit memory".to_owned(),
                );
            }
            if memory.is_shared() {
                problems.push("export memory is shared; plugins cannot share memory".to_owned());
            }
            initial_memory_bytes = memory.minimum().saturating_mul(memory.page_size());
            if initial_memory_bytes > memory_limit as u64 {
                problems.push(format!(
                    "the memory starts at {initial_memory_bytes} bytes, more than the {memory_limit} a plugin may use"
                ));
            }
        }
        Some(other) => problems.push(format!(
            "export memory must be a memory, found {}",
            describe(&other)
        )),
        None => problems.push("missing export memory (the plugin's linear memory)".to_owned()),
    }
    for (name, params, results) in REQUIRED_FUNCTIONS {
        match module.get_export(name) {
            Some(ExternType::Func(func)) if signature_is(&func, params, results) => {}
            Some(other) => problems.push(format!(
                "export {name} has type {}, but ABI v1 needs {}",
                describe(&other),
                signature(params, results)
            )),
            None => problems.push(format!(
                "missing export {name}: {}",
                signature(params, results)
            )),
        }
    }
    (imports, exports, initial_memory_bytes, problems)
}

fn signature_is(func: &FuncType, params: &[ValType], results: &[ValType]) -> bool {
    let same = |found: &mut dyn ExactSizeIterator<Item = ValType>, wanted: &[ValType]| {
        found.len() == wanted.len() && found.zip(wanted).all(|(a, b)| ValType::eq(&a, b))
    };
    same(&mut func.params(), params) && same(&mut func.results(), results)
}

fn signature(params: &[ValType], results: &[ValType]) -> String {
    let list = |types: &[ValType]| {
        types
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match results {
        [] => format!("func({})", list(params)),
        _ => format!("func({}) -> {}", list(params), list(results)),
    }
}

fn describe(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(func) => {
            let params: Vec<ValType> = func.params().collect();
            let results: Vec<ValType> = func.results().collect();
            signature(&params, &results)
        }
        ExternType::Memory(memory) => match memory.maximum() {
            Some(max) => format!("memory({} to {max} pages)", memory.minimum()),
            None => format!("memory({} pages)", memory.minimum()),
        },
        ExternType::Table(_) => "table".to_owned(),
        ExternType::Global(_) => "global".to_owned(),
        ExternType::Tag(_) => "tag".to_owned(),
    }
}

fn offered() -> String {
    HOST_FUNCTIONS
        .iter()
        .map(|(name, params, results)| format!("tally.{name}: {}", signature(params, results)))
        .collect::<Vec<_>>()
        .join(", ")
}
