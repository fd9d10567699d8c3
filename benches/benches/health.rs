//! Placeholder until the health bench lands.
fn main() {}
