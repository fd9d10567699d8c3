//! The Kafka carrier (feature `kafka`): the context in rdkafka message headers.
//!
//! Header keys are the lowercase HTTP names (`x-cell-id`, `traceparent`...),
//! values their HTTP form; the same rules and bounds apply as for HTTP.
//!
//! ```no_run
//! use cellctx::{CellContext, HeaderNames};
//! use cellctx::kafka::{extract_message, inject_kafka};
//! use rdkafka::message::OwnedHeaders;
//! # fn demo(msg: &rdkafka::message::BorrowedMessage<'_>) -> Result<(), cellctx::ContextError> {
//! let names = HeaderNames::default();
//! // producer side
//! let headers = inject_kafka(&CellContext::new(), &names, OwnedHeaders::new())?;
//! // consumer side
//! let ctx = extract_message(msg, &names)?;
//! # Ok(()) }
//! ```

use http::HeaderName;
use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

use crate::codec::{Source, encode_fields, extract_from};
use crate::context::CellContext;
use crate::error::{ContextError, InvalidValue};
use crate::headers::{BAGGAGE, HeaderNames, TRACEPARENT, TRACESTATE};

struct KafkaSource<'a, H: ?Sized>(&'a H);

impl<H: Headers + ?Sized> Source for KafkaSource<'_, H> {
    fn get(&self, name: &HeaderName) -> crate::codec::Found<'_> {
        let mut found = None;
        for i in 0..self.0.count() {
            let Some(h) = self.0.try_get(i) else { break };
            if h.key.eq_ignore_ascii_case(name.as_str())
                && let Some(v) = h.value
            {
                if found.is_some() {
                    return Err(InvalidValue::Malformed("repeated header"));
                }
                found = Some(v);
            }
        }
        Ok(found.map(|v| (v, None)))
    }
}

/// Reads the context from Kafka message headers (same rules as [`crate::extract`];
/// a missing request id is generated).
pub fn extract_kafka<H: Headers + ?Sized>(headers: &H, names: &HeaderNames) -> Result<CellContext, ContextError> {
    extract_from(&KafkaSource(headers), names)
}

/// Reads the context from a consumed message (a message without headers gives
/// a context with only a fresh request id).
pub fn extract_message<M: Message>(msg: &M, names: &HeaderNames) -> Result<CellContext, ContextError>
where
    M::Headers: Headers,
{
    match msg.headers() {
        Some(h) => extract_kafka(h, names),
        None => extract_from(&KafkaSource(&OwnedHeaders::new()), names),
    }
}

fn is_context_key(key: &str, names: &HeaderNames) -> bool {
    [
        &names.cell,
        &names.request_id,
        &names.tenant,
        &names.auth_user,
        &names.routing_key,
        &names.region_hint,
        &names.downgraded,
        &names.xid,
        &names.signature,
        &TRACEPARENT,
        &TRACESTATE,
        &BAGGAGE,
    ]
    .iter()
    .any(|n| key.eq_ignore_ascii_case(n.as_str()))
}

/// Writes the context into `headers`, returning them: the headers already there
/// are kept, except context keys, which the context replaces (Kafka headers may
/// repeat a key, and a repeated context key is refused on the way in). Values
/// are checked as [`crate::inject`] checks them; on error nothing is written.
pub fn inject_kafka(ctx: &CellContext, names: &HeaderNames, headers: OwnedHeaders) -> Result<OwnedHeaders, ContextError> {
    let mut fields = Vec::with_capacity(crate::headers::FIELDS);
    let mut first_err = None;
    encode_fields(ctx, names, |_, name, value| match value {
        Ok(v) => fields.push((name.clone(), v)),
        Err(e) => {
            first_err.get_or_insert(e);
        }
    });
    if let Some(e) = first_err {
        return Err(e);
    }
    let mut out = OwnedHeaders::new_with_capacity(headers.count() + fields.len());
    for i in 0..headers.count() {
        let Some(h) = headers.try_get(i) else { break };
        if !is_context_key(h.key, names) {
            out = out.insert(Header { key: h.key, value: h.value });
        }
    }
    for (name, value) in &fields {
        out = out.insert(Header { key: name.as_str(), value: Some(value.as_bytes()) });
    }
    Ok(out)
}

/// Reads OpenTelemetry propagation fields from Kafka headers (UTF-8 values only).
#[derive(Debug)]
pub struct KafkaHeaderExtractor<'a, H: ?Sized>(pub &'a H);

impl<H: Headers + ?Sized> Extractor for KafkaHeaderExtractor<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        (0..self.0.count())
            .filter_map(|i| self.0.try_get(i))
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        (0..self.0.count()).filter_map(|i| self.0.try_get(i)).map(|h| h.key).collect()
    }
}

/// Writes OpenTelemetry propagation fields into Kafka headers (appending).
///
/// ```
/// use cellctx::kafka::KafkaHeaderInjector;
/// use opentelemetry::propagation::Injector;
/// use rdkafka::message::Headers;
///
/// let mut inj = KafkaHeaderInjector::new();
/// inj.set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
/// let headers = inj.into_inner();
/// assert_eq!(headers.get(0).key, "traceparent");
/// ```
#[derive(Debug, Default)]
pub struct KafkaHeaderInjector {
    headers: OwnedHeaders,
}

impl KafkaHeaderInjector {
    /// Starts from no headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from `headers`.
    pub fn from_headers(headers: OwnedHeaders) -> Self {
        KafkaHeaderInjector { headers }
    }

    /// The headers written.
    pub fn into_inner(self) -> OwnedHeaders {
        self.headers
    }
}

impl Injector for KafkaHeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        let headers = std::mem::take(&mut self.headers);
        self.headers = headers.insert(Header { key, value: Some(value.as_str()) });
    }
}
