use tally_sdk::{Decision, Error, Input, plugin};

#[plugin]
fn rule(_input: &Input, _extra: u32) -> Result<Decision, Error> {
    Ok(Decision::new())
}

fn main() {}
