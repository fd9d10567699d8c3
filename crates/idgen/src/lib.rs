//! `idgen`: see the crate README.
