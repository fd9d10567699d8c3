//! Placeholder until the gslb bench lands.
fn main() {}
