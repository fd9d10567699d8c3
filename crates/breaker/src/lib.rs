//! `breaker`: see the crate README.
