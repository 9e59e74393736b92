use tally_sdk::{Decision, Error, Input, plugin};

#[plugin]
fn rule<T>(_input: &Input) -> Result<Decision, Error> {
    Ok(Decision::new())
}

fn main() {}
