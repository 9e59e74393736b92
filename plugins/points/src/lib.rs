//! placeholder
use tally_sdk::{Decision, Error, Input, plugin};

#[plugin]
fn rule(_input: &Input) -> Result<Decision, Error> {
    Ok(Decision::new())
}
