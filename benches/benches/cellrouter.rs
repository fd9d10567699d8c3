//! Placeholder until the cellrouter bench lands.
fn main() {}
