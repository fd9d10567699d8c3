//! `saga`: see the crate README.
