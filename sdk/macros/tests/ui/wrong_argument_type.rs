use tally_sdk::{Decision, Error, plugin};

#[plugin]
fn rule(_input: &str) -> Result<Decision, Error> {
    Ok(Decision::new())
}

fn main() {}
