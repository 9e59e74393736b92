//! Write Tally loyalty rules as WebAssembly plugins.
//!
//! A rule is one function from a typed [`Input`] (the event, the customer, the plugin's
//! configuration and state) to a typed [`Decision`] (points, perks, tier, triggers, new
//! state), marked with [`#[plugin]`](plugin). The attribute generates the ABI exports the host
//! calls, only when building for `wasm32`, so the same crate builds natively and its rule
//! unit-tests with plain `cargo test`.
//!
//! ```
//! use serde::Deserialize;
//! use tally_sdk::{Decision, Decimal, Error, Input, plugin};
//!
//! #[derive(Deserialize)]
//! #[serde(default)]
//! struct Config {
//!     /// Points per unit of currency spent.
//!     rate: Decimal,
//! }
//!
//! impl Default for Config {
//!     fn default() -> Self {
//!         Config { rate: Decimal::from_int(1) }
//!     }
//! }
//!
//! #[plugin]
//! fn rule(input: &Input) -> Result<Decision, Error> {
//!     if input.event.action != "checkout" {
//!         return Ok(Decision::new());
//!     }
//!     let config: Config = input.config()?;
//!     // "total" may arrive as 200, 200.5 or "200": all are read exactly.
//!     let total = input.event.decimal("total")?;
//!     let points = total.checked_mul(config.rate)?.floor()?;
//!     if points <= 0 {
//!         return Ok(Decision::new());
//!     }
//!     Ok(Decision::new().earn(points, "checkout"))
//! }
//!
//! // The rule is a plain function, so it tests natively:
//! let input = tally_sdk::testing::input("checkout", serde_json::json!({"total": "200"}))
//!     .config(serde_json::json!({"rate": 0.1}))
//!     .build();
//! let decision = rule(&input).unwrap();
//! assert_eq!(decision.points_total(), 20);
//! ```
//!
//! Build it for the host with `cargo build --release --target wasm32-unknown-unknown`
//! (a `cdylib` crate) and try it with `tally eval --plugin target/.../rule.wasm --event e.json`.
//!
//! A rule that refuses an event returns `Err(Error::new("why"))`; the host records that
//! message as the plugin's error. A panic is caught by the host too, as a trap, with the
//! panic message.

#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
mod bump;
pub mod log;
pub mod number;
pub mod testing;
pub mod time;
pub mod wire;

use std::fmt;

pub use number::{Decimal, Money, NumberError};
pub use tally_sdk_macros::plugin;
pub use time::{Timestamp, TimestampError};
pub use wire::{
    ABI_VERSION, Customer, Decision, DecisionViolation, Event, INTERNAL_ACTIONS, Input, Output,
    Perk, PerkStatus, PluginInfo, PointEntry, PointKind, Points, RawJson, Stats, Trigger,
    is_internal_action,
};

/// On wasm32 every allocation goes to a bump allocator: an instance lives for one
/// evaluation, so nothing needs to be freed (see the `bump` module).
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: bump::Bump = bump::Bump::new();

/// An error a rule returns on purpose; the host records its message as the plugin's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// An error with `message`, which the tenant reads: say what was wrong with the event.
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Error {
        Error::new(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Error {
        Error::new(message)
    }
}

impl From<NumberError> for Error {
    fn from(error: NumberError) -> Error {
        Error::new(error.to_string())
    }
}

impl From<TimestampError> for Error {
    fn from(error: TimestampError) -> Error {
        Error::new(error.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Error {
        Error::new(error.to_string())
    }
}

/// A small deterministic random number generator (SplitMix64), seeded by the host from
/// tenant, plugin and event id: the same event always draws the same numbers.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator from a 64-bit seed.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub(crate) fn from_seed_hex(seed: &str) -> Rng {
        Rng::new(u64::from_str_radix(seed, 16).unwrap_or(0))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` without modulo bias; 0 when `bound` is 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        let zone = u64::MAX - u64::MAX % bound;
        loop {
            let value = self.next_u64();
            if value < zone {
                return value % bound;
            }
        }
    }

    /// A code of `len` characters from an alphabet without look-alikes (no 0/O, 1/I/L):
    /// for coupon codes.
    pub fn code(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
        (0..len)
            .map(|_| char::from(ALPHABET[self.below(ALPHABET.len() as u64) as usize]))
            .collect()
    }
}

/// What a rule may return: a decision, or a result whose error converts into [`Error`].
pub trait IntoOutput {
    /// The wire output.
    fn into_output(self) -> Output;
}

impl IntoOutput for Decision {
    fn into_output(self) -> Output {
        Output::Decision(self)
    }
}

impl<E: Into<Error>> IntoOutput for Result<Decision, E> {
    fn into_output(self) -> Output {
        match self {
            Ok(decision) => Output::Decision(decision),
            Err(error) => Output::Error(error.into().message),
        }
    }
}

#[doc(hidden)]
pub mod __private {
    //! What `#[plugin]` expands to; not part of the public API.
    use super::*;

    /// Makes the rule's signature errors point at the rule.
    pub fn assert_rule<R: IntoOutput>(_rule: fn(&Input) -> R) {}

    /// Runs `rule` on the input JSON and serializes its output.
    pub fn evaluate_json<R: IntoOutput>(input: &[u8], rule: fn(&Input) -> R) -> Vec<u8> {
        // Checked as UTF-8 once, the input is read as `str`, as every later read (config, state,
        // event data) is: one copy of each `Deserialize` impl in the wasm instead of one per
        // reader, and no second UTF-8 check of strings.
        let read = std::str::from_utf8(input)
            .map_err(|why| why.to_string())
            .and_then(|text| wire::read_input(text).map_err(|why| why.to_string()));
        let (input, output) = match read {
            Ok(input) => {
                let output = rule(&input).into_output();
                (Some(input), output)
            }
            Err(why) => (
                None,
                Output::Error(format!("the plugin could not read its input: {why}")),
            ),
        };
        let json = output.into_json().unwrap_or_else(|why| {
            // Only a map with non-string keys fails to serialize; say so rather than trap.
            let message = serde_json::Value::String(format!(
                "the plugin's decision could not be written: {why}"
            ));
            format!("{{\"error\":{message}}}").into_bytes()
        });
        // As the decision in `Output::into_json`: in wasm, dropping the input is work for
        // nothing, since the instance is thrown away after this call.
        #[cfg(target_arch = "wasm32")]
        std::mem::forget(input);
        #[cfg(not(target_arch = "wasm32"))]
        drop(input);
        json
    }

    #[cfg(target_arch = "wasm32")]
    pub use wasm::*;

    #[cfg(target_arch = "wasm32")]
    mod wasm {
        use super::*;

        /// `tally_alloc`: room for the input, owned by the guest allocator. The instance lives
        /// for one evaluation, so nothing is ever freed.
        pub fn alloc(len: i32) -> i32 {
            let mut buffer = Vec::<u8>::with_capacity(len.max(0) as usize);
            let ptr = buffer.as_mut_ptr();
            std::mem::forget(buffer);
            ptr as i32
        }

        /// `tally_evaluate`: reads the input at `ptr..ptr+len`, runs the rule, returns
        /// `(out_ptr << 32) | out_len`.
        ///
        /// # Safety
        /// `ptr..ptr+len` must be memory returned by [`alloc`] and filled by the host.
        pub unsafe fn evaluate<R: IntoOutput>(ptr: i32, len: i32, rule: fn(&Input) -> R) -> i64 {
            install_panic_hook();
            // SAFETY: the host wrote `len` bytes at `ptr`, a buffer `alloc` handed out.
            let input =
                unsafe { std::slice::from_raw_parts(ptr as *const u8, len.max(0) as usize) };
            let output = evaluate_json(input, rule);
            let (out_ptr, out_len) = (output.as_ptr() as u32, output.len() as u32);
            std::mem::forget(output);
            (i64::from(out_ptr) << 32) | i64::from(out_len)
        }

        /// A panic is a trap for the host; logging its message first lets the host report
        /// why the plugin panicked instead of a bare `unreachable`.
        fn install_panic_hook() {
            std::panic::set_hook(Box::new(|info| {
                crate::log::log(crate::log::Level::Fatal, &info.to_string());
            }));
        }
    }
}
