//! Placeholder until the stack_load bench lands.
fn main() {}
