//! Placeholder until the idgen bench lands.
fn main() {}
