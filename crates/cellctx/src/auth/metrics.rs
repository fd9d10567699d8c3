//! The authentication instrument, looked up once when a layer is built.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};

use crate::error::AuthFailure;

/// `cellctx.auth.rejected`: requests an edge answered 401 (attribute `reason`:
/// the [`AuthFailure::kind`], e.g. `missing`, `expired`, `wrong-audience`,
/// `unknown-key`: a fixed set).
pub const AUTH_REJECTED: &str = "cellctx.auth.rejected";

#[derive(Clone, Debug)]
pub(crate) struct AuthMetrics {
    rejected: Counter<u64>,
}

impl AuthMetrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        AuthMetrics {
            rejected: meter.u64_counter(AUTH_REJECTED).with_description("Requests refused at the edge for their credential").build(),
        }
    }

    pub(crate) fn rejected(&self, failure: &AuthFailure) {
        self.rejected.add(1, &[KeyValue::new("reason", failure.kind())]);
    }
}
