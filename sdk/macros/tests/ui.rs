//! The `#[plugin]` attribute refuses a rule it cannot wrap with a compile error that points
//! at the problem and says the fix. Each case is a file in `ui/` with its expected message.
//!
//! Run: `cargo test -p tally-sdk-macros --test ui` (`TRYBUILD=overwrite` to accept new output).

#[test]
fn misuse_fails_with_a_spanned_error_that_says_the_fix() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
