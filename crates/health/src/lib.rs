//! `health`: see the crate README.
