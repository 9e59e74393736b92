//! Logging from a plugin. On wasm32 the lines go to the host, which keeps them (size-capped)
//! with the evaluation; natively (in unit tests) they go to stderr.

/// How important a log line is; the host records the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(i32)]
pub enum Level {
    /// Detail for the plugin author.
    Debug = 0,
    /// Normal operation.
    Info = 1,
    /// Something odd that did not stop the rule.
    Warn = 2,
    /// Something failed.
    Error = 3,
    /// The plugin is about to trap; the message says why. The SDK's panic hook sends the
    /// panic message at this level so the host can report it instead of a bare trap.
    Fatal = 4,
}

/// Sends one log line to the host.
pub fn log(level: Level, message: &str) {
    imp::log(level, message);
}

/// Logs at [`Level::Debug`].
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs at [`Level::Info`].
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs at [`Level::Warn`].
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs at [`Level::Error`].
pub fn error(message: &str) {
    log(Level::Error, message);
}

#[cfg(target_arch = "wasm32")]
mod imp {
    #[link(wasm_import_module = "tally")]
    unsafe extern "C" {
        #[link_name = "log"]
        fn tally_log(level: i32, ptr: i32, len: i32);
    }

    pub(super) fn log(level: super::Level, message: &str) {
        // wasm32 pointers and lengths are 32 bits wide, so the casts are lossless.
        // SAFETY: the host reads `len` bytes at `ptr` from this instance's memory, which
        // `message` keeps alive for the call.
        unsafe { tally_log(level as i32, message.as_ptr() as i32, message.len() as i32) }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    pub(super) fn log(level: super::Level, message: &str) {
        eprintln!("[plugin {level:?}] {message}");
    }
}
