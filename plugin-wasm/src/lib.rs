//! The reference plugins and test fixtures as wasm bytes, built from `plugins/` by this
//! crate's build script for every build and test.

macro_rules! plugins {
    ($($(#[$doc:meta])* $name:ident => $file:literal,)*) => {
        $(
            $(#[$doc])*
            pub const $name: Plugin = Plugin {
                name: $file,
                path: concat!(env!("OUT_DIR"), "/", $file, ".wasm"),
                wasm: include_bytes!(concat!(env!("OUT_DIR"), "/", $file, ".wasm")),
            };
        )*

        /// Every plugin built, reference plugins first.
        pub const ALL: &[Plugin] = &[$($name),*];
    };
}

/// A plugin built to wasm.
#[derive(Debug, Clone, Copy)]
pub struct Plugin {
    /// The crate name, which is also the plugin name the demo uploads it under.
    pub name: &'static str,
    /// Where the `.wasm` file is, for tools that take a path.
    pub path: &'static str,
    /// The module's bytes.
    pub wasm: &'static [u8],
}

plugins! {
    /// Points for checkouts, with tier multipliers, reversals, updates and return-window holds.
    POINTS => "points",
    /// Tiers from lifetime points or reviewed window points, with `TierEarned`, `TierLost`,
    /// `TierKept` and `TierStatusChanged`.
    TIERS => "tiers",
    /// Rewards for repairs, pre-owned, recycling and wholesale purchases.
    CIRCULAR => "circular",
    /// Engagement values, personal-record swims, reviews and referrals.
    ENGAGEMENT => "engagement",
    /// Birthday perks, anniversary points and reminders, on the host's internal events.
    BIRTHDAY => "birthday",
    /// Test fixture: misbehaves as its config says.
    HOSTILE => "hostile",
}

/// The reference plugins, the ones `tally serve --demo` installs.
pub const REFERENCE: &[Plugin] = &[POINTS, TIERS, CIRCULAR, ENGAGEMENT, BIRTHDAY];
