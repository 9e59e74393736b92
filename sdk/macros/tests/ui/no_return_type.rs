use tally_sdk::{Input, plugin};

#[plugin]
fn rule(_input: &Input) {}

fn main() {}
