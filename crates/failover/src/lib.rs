//! `failover`: see the crate README.
