//! `gslb`: see the crate README.
