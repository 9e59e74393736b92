//! What one evaluation may use. Every limit has a safe default and can be changed per host.

use std::time::Duration;

/// Limits for one plugin evaluation, and the size of the instance pool.
///
/// The defaults let a real rule (a serde_json guest parsing a few kilobytes) run with a
/// wide margin, and stop a runaway plugin in well under a second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Instruction budget per evaluation; `None` turns fuel metering off (for benchmarks:
    /// the deadline still stops a runaway plugin). Default 50 million, in the range of
    /// Shopify Functions' limit: about 20 ms of wasm on this class of machine.
    pub fuel: Option<u64>,
    /// Wall-clock backstop per evaluation, enforced by epoch interruption. Default 200 ms.
    pub deadline: Duration,
    /// Linear-memory cap per instance. Default 32 MiB: a Rust guest starts at about 1.1 MiB
    /// (1 MiB of shadow stack plus data) and a rule on a 1 KB event allocates kilobytes.
    pub memory_bytes: usize,
    /// Largest input JSON the host will hand a plugin. Default 1 MiB.
    pub max_input_bytes: usize,
    /// Largest output JSON the host will read back. Default 1 MiB.
    pub max_output_bytes: usize,
    /// Largest plugin state per customer, as JSON. Default 64 KiB.
    pub max_state_bytes: usize,
    /// Log bytes kept per evaluation; later lines are dropped and the drop is recorded.
    /// Default 16 KiB.
    pub max_log_bytes: usize,
    /// Largest module accepted at load. Default 16 MiB.
    pub max_module_bytes: usize,
    /// Instances that can be live at once (pool slots). Default 64: evaluations are short
    /// and the host runs them on a few threads.
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            fuel: Some(50_000_000),
            deadline: Duration::from_millis(200),
            memory_bytes: 32 << 20,
            max_input_bytes: 1 << 20,
            max_output_bytes: 1 << 20,
            max_state_bytes: 64 << 10,
            max_log_bytes: 16 << 10,
            max_module_bytes: 16 << 20,
            max_instances: 64,
        }
    }
}
