//! The crate's instruments, looked up once when a layer is built.
//!
//! Attribute values come from fixed sets, never from a request: `reason` is
//! one of the listed kinds and `header` one of the layer's configured header
//! names (a rejected header is always a configured one), so forged or
//! malformed headers cannot grow the number of series (`tests/metric_attrs.rs`).

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};

use crate::error::ContextError;

/// `cellctx.signature.rejected`: signatures an edge refused (attribute `reason`:
/// `signature-malformed`, `signature-mismatch`, `signature-expired`, `no-keys`).
pub const SIGNATURE_REJECTED: &str = "cellctx.signature.rejected";
/// `cellctx.edge.stripped`: requests whose internal headers an edge stripped
/// (unsigned, or the signature was refused).
pub const EDGE_STRIPPED: &str = "cellctx.edge.stripped";
/// `cellctx.header.rejected`: requests answered 400/431 for a context header
/// (attributes `reason`: `malformed` or `oversized`, and `header`).
pub const HEADER_REJECTED: &str = "cellctx.header.rejected";

#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    signature_rejected: Counter<u64>,
    edge_stripped: Counter<u64>,
    header_rejected: Counter<u64>,
}

impl Metrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        Metrics {
            signature_rejected: meter
                .u64_counter(SIGNATURE_REJECTED)
                .with_description("Context signatures refused at the edge")
                .build(),
            edge_stripped: meter
                .u64_counter(EDGE_STRIPPED)
                .with_description("Requests whose internal context headers the edge stripped")
                .build(),
            header_rejected: meter
                .u64_counter(HEADER_REJECTED)
                .with_description("Requests rejected for a malformed or oversized context header")
                .build(),
        }
    }

    pub(crate) fn signature_rejected(&self, reason: &'static str) {
        self.signature_rejected.add(1, &[KeyValue::new("reason", reason)]);
    }

    pub(crate) fn edge_stripped(&self) {
        self.edge_stripped.add(1, &[]);
    }

    pub(crate) fn header_rejected(&self, err: &ContextError) {
        let header = err.header().map(|h| h.as_str().to_owned()).unwrap_or_default();
        self.header_rejected.add(1, &[KeyValue::new("reason", err.kind()), KeyValue::new("header", header)]);
    }
}
