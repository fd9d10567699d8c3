//! `crdt`: see the crate README.
