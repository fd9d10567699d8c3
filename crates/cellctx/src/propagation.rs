//! The bridge to the OpenTelemetry propagator API, so traces continue across
//! hops: [`HeaderExtractor`] / [`HeaderInjector`] carriers for an
//! [`http::HeaderMap`], and [`CellContext::otel_context`].
//!
//! Both layers use the *global* text-map propagator
//! ([`opentelemetry::global::set_text_map_propagator`]); the application installs
//! one (e.g. `opentelemetry_sdk::propagation::TraceContextPropagator`). With none
//! installed the W3C headers still ride along unchanged, as raw values.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;

use crate::context::CellContext;

/// Reads OpenTelemetry propagation fields from an [`http::HeaderMap`].
///
/// ```
/// use opentelemetry::propagation::Extractor;
/// let mut headers = http::HeaderMap::new();
/// headers.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap());
/// let ex = cellctx::HeaderExtractor(&headers);
/// assert_eq!(ex.get("TraceParent"), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let all: Vec<&str> = self.0.get_all(key).iter().filter_map(|v| v.to_str().ok()).collect();
        (!all.is_empty()).then_some(all)
    }
}

/// Writes OpenTelemetry propagation fields into an [`http::HeaderMap`],
/// replacing existing values; keys or values that are not valid in HTTP are skipped.
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// Like [`HeaderInjector`] but never replaces a header that is already there.
pub(crate) struct KeepingInjector<'a>(pub(crate) &'a mut HeaderMap);

impl Injector for KeepingInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::try_from(value))
            && let http::header::Entry::Vacant(slot) = self.0.entry(name)
        {
            slot.insert(value);
        }
    }
}

/// Extractor over a context's own trace fields.
struct TraceFields<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
    baggage: Option<String>,
}

impl Extractor for TraceFields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case("traceparent") {
            self.traceparent
        } else if key.eq_ignore_ascii_case("tracestate") {
            self.tracestate
        } else if key.eq_ignore_ascii_case("baggage") {
            self.baggage.as_deref()
        } else {
            None
        }
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys = Vec::with_capacity(3);
        if self.traceparent.is_some() {
            keys.push("traceparent");
        }
        if self.tracestate.is_some() {
            keys.push("tracestate");
        }
        if self.baggage.is_some() {
            keys.push("baggage");
        }
        keys
    }
}

impl CellContext {
    /// The OpenTelemetry context this request continues: the context's
    /// `traceparent`, `tracestate` and `baggage` read through the global
    /// text-map propagator. Start spans with it as parent
    /// (`tracer.start_with_context(name, &ctx.otel_context())`).
    pub fn otel_context(&self) -> opentelemetry::Context {
        let fields = TraceFields {
            traceparent: self.traceparent.as_deref(),
            tracestate: self.tracestate.as_deref(),
            baggage: if self.baggage.is_empty() { None } else { crate::codec::encode_baggage(&self.baggage).ok() },
        };
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&fields))
    }
}

/// The OpenTelemetry context to attach around a request's inner future: the one
/// the global propagator reads from `headers` (which carry a `traceparent`),
/// when it holds a span.
pub(crate) fn extract_otel(headers: &HeaderMap) -> Option<opentelemetry::Context> {
    opentelemetry::global::get_text_map_propagator(|p| {
        // A propagator without fields (none installed: the no-op one) reads nothing.
        p.fields().next()?;
        let cx = p.extract(&HeaderExtractor(headers));
        cx.has_active_span().then_some(cx)
    })
}

/// Writes the current OpenTelemetry context (when it has a span) into `headers`
/// through the global propagator, keeping headers already set.
pub(crate) fn inject_current_otel(headers: &mut HeaderMap) {
    if !opentelemetry::Context::map_current(|cx| cx.has_active_span()) {
        return;
    }
    let cx = opentelemetry::Context::current();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut KeepingInjector(headers)));
}
