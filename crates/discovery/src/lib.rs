//! `discovery`: see the crate README.
