//! `cellrouter`: see the crate README.
