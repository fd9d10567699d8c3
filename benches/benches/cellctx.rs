//! Placeholder until the cellctx bench lands.
fn main() {}
