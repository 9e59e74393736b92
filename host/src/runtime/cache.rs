//! Compiled modules, keyed by the SHA-256 of their wasm: compiled once per process, and
//! once per machine when a cache directory is given (a restart deserializes instead of
//! recompiling every tenant's plugins).

use std::collections::HashMap;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use wasmtime::{Engine, Module};

use super::LoadError;

#[derive(Debug)]
pub(super) struct ArtifactCache {
    dir: Option<PathBuf>,
    compiled: Mutex<HashMap<[u8; 32], Module>>,
}

impl ArtifactCache {
    pub(super) fn new(dir: Option<PathBuf>) -> ArtifactCache {
        ArtifactCache {
            dir,
            compiled: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn get_or_compile(
        &self,
        engine: &Engine,
        sha256: &[u8; 32],
        wasm: &[u8],
    ) -> Result<Module, LoadError> {
        if let Some(module) = self.lock().get(sha256) {
            return Ok(module.clone());
        }
        let module = match self.artifact_path(engine, sha256) {
            Some(path) => match load_artifact(engine, &path) {
                Some(module) => module,
                None => {
                    let module = compile(engine, wasm)?;
                    store_artifact(&module, &path);
                    module
                }
            },
            None => compile(engine, wasm)?,
        };
        self.lock().insert(*sha256, module.clone());
        Ok(module)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Module>> {
        // A panic while holding the lock cannot leave the map half-written: recover it.
        self.compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn artifact_path(&self, engine: &Engine, sha256: &[u8; 32]) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        // Engines with other settings (fuel on or off, another memory cap, another wasmtime)
        // compile differently: each gets its own artifact instead of overwriting another's.
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Some(dir.join(format!(
            "{}-{:016x}.cwasm",
            hex::encode(sha256),
            hasher.finish()
        )))
    }
}

fn compile(engine: &Engine, wasm: &[u8]) -> Result<Module, LoadError> {
    Module::from_binary(engine, wasm).map_err(|error| LoadError::Invalid {
        reason: format!("{error:#}"),
    })
}

fn load_artifact(engine: &Engine, path: &Path) -> Option<Module> {
    if !path.exists() {
        return None;
    }
    // SAFETY: artifacts in the cache directory are written only by `store_artifact` from a
    // module this host compiled; the directory is the host's own data directory. wasmtime
    // still checks that the artifact matches this engine's configuration and refuses it
    // otherwise, in which case we recompile.
    match unsafe { Module::deserialize_file(engine, path) } {
        Ok(module) => Some(module),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring an unusable compiled artifact; recompiling");
            None
        }
    }
}

fn store_artifact(module: &Module, path: &Path) {
    let written = module
        .serialize()
        .map_err(|error| error.to_string())
        .and_then(|bytes| {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(|error| error.to_string())?;
            }
            // Write then rename, so a crash never leaves a truncated artifact under the real name.
            let partial = path.with_extension("partial");
            fs::write(&partial, bytes).map_err(|error| error.to_string())?;
            fs::rename(&partial, path).map_err(|error| error.to_string())
        });
    if let Err(error) = written {
        // The cache only saves time; the module is compiled and usable either way.
        tracing::warn!(path = %path.display(), %error, "could not cache a compiled artifact");
    }
}
