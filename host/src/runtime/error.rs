//! Why a module was refused, and why an evaluation failed. Each variant has a stable code
//! that the API and the CLI report, and a message a tenant can act on.

/// A module refused at load (upload), or the engine failing to start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The module is larger than [`Limits::max_module_bytes`](super::Limits::max_module_bytes).
    #[error("the module is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        /// The module's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a valid WebAssembly module.
    #[error("not a valid WebAssembly module: {reason}")]
    Invalid {
        /// What the validator said, with the byte offset.
        reason: String,
    },
    /// A valid module that breaks the plugin ABI; every problem is listed.
    #[error("the module breaks the plugin ABI: {}", problems.join("; "))]
    Refused {
        /// Each problem, in words that name the import, export or number at fault.
        problems: Vec<String>,
    },
    /// The engine could not be configured or could not instantiate the module for a
    /// reason that is the host's, not the plugin's (e.g. the instance pool is exhausted).
    #[error("the plugin runtime failed: {0}")]
    Host(String),
}

impl LoadError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::TooLarge { .. } => "plugin_too_large",
            LoadError::Invalid { .. } | LoadError::Refused { .. } => "invalid_plugin",
            LoadError::Host(_) => "internal",
        }
    }
}

/// Why one evaluation failed. A failed evaluation changes nothing: the host records the
/// error for that plugin and carries on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The plugin returned `{"error": "..."}`: it refused the event on purpose.
    #[error("{message}")]
    Refused {
        /// The plugin's own message.
        message: String,
    },
    /// The plugin used its whole instruction budget.
    #[error("the plugin ran out of fuel: it used its whole budget of {budget} instructions")]
    OutOfFuel {
        /// The budget.
        budget: u64,
    },
    /// The plugin ran past the wall-clock deadline.
    #[error("the plugin ran past its deadline of {limit_ms} ms")]
    Deadline {
        /// The deadline.
        limit_ms: u64,
    },
    /// The plugin asked for more linear memory than the cap.
    #[error("the plugin asked for {requested} bytes of memory, more than the {limit} allowed")]
    MemoryLimit {
        /// The size it asked to grow to.
        requested: usize,
        /// The cap.
        limit: usize,
    },
    /// The plugin recursed past the wasm stack limit.
    #[error("the plugin exhausted its call stack (runaway recursion?)")]
    StackOverflow,
    /// The plugin panicked; the SDK reported the panic message before trapping.
    #[error("the plugin panicked: {message}")]
    Panic {
        /// The panic message, with its source location.
        message: String,
    },
    /// Any other trap.
    #[error("the plugin trapped: {trap}")]
    Trap {
        /// The trap's description.
        trap: String,
    },
    /// The input exceeds [`Limits::max_input_bytes`](super::Limits::max_input_bytes).
    #[error("the input is {size} bytes, more than the {limit} a plugin may be given")]
    InputTooLarge {
        /// The input's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The output exceeds [`Limits::max_output_bytes`](super::Limits::max_output_bytes).
    #[error("the plugin's output is {size} bytes, more than the {limit} allowed")]
    OutputTooLarge {
        /// The output's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The new state exceeds [`Limits::max_state_bytes`](super::Limits::max_state_bytes).
    #[error("the plugin's new state is {size} bytes, more than the {limit} allowed")]
    StateTooLarge {
        /// The state's size as JSON.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The output is not a decision: bad JSON, wrong types, unknown fields, or a pointer
    /// outside the plugin's memory.
    #[error("the plugin's output is not a valid decision: {reason}")]
    BadOutput {
        /// What is wrong, with the field path.
        reason: String,
    },
    /// A well-formed decision that breaks a decision rule (e.g. a points amount of 0).
    #[error("the plugin's decision breaks a rule: {reason}")]
    DecisionRule {
        /// The rule broken, with the field and numbers.
        reason: String,
    },
    /// The host could not run the plugin (e.g. every pool slot busy); not the plugin's fault.
    #[error("the plugin could not be run: {reason}")]
    Host {
        /// What failed.
        reason: String,
    },
}

impl EvalError {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            EvalError::Refused { .. } => "plugin_error",
            EvalError::OutOfFuel { .. } => "out_of_fuel",
            EvalError::Deadline { .. } => "deadline_exceeded",
            EvalError::MemoryLimit { .. } => "memory_limit",
            EvalError::StackOverflow => "stack_overflow",
            EvalError::Panic { .. } => "panic",
            EvalError::Trap { .. } => "trap",
            EvalError::InputTooLarge { .. } => "input_too_large",
            EvalError::OutputTooLarge { .. } => "output_too_large",
            EvalError::StateTooLarge { .. } => "state_too_large",
            EvalError::BadOutput { .. } => "bad_output",
            EvalError::DecisionRule { .. } => "decision_rule",
            EvalError::Host { .. } => "host_error",
        }
    }
}
