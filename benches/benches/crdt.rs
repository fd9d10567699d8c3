//! Placeholder until the crdt bench lands.
fn main() {}
