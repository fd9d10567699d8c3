//! Reading a [`CellContext`] from a carrier (HTTP headers, Kafka headers) and
//! writing it back: the free functions [`extract`] and [`inject`].

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::baggage::{Baggage, MAX_BAGGAGE_BYTES};
use crate::cell_id::{CellId, MAX_CELL_ID_LEN};
use crate::context::{CellContext, MAX_TOKEN_LEN, RegionHint};
use crate::error::{ContextError, InvalidValue};
use crate::headers::{BAGGAGE, FIELDS, HeaderNames, TRACEPARENT, TRACESTATE};
use crate::name_scan::NameScan;
use crate::token::Token;

/// Longest `X-Region-Hint` value, in bytes.
pub(crate) const MAX_REGION_HINT_LEN: usize = 64;
/// Longest `X-Downgraded` value, in bytes.
pub(crate) const MAX_FLAG_LEN: usize = 8;
/// Longest `traceparent` kept (version 00 is 55 bytes; later versions may add fields).
pub(crate) const MAX_TRACEPARENT_LEN: usize = 256;
/// Longest `tracestate` kept (the W3C recommendation).
pub(crate) const MAX_TRACESTATE_LEN: usize = 512;
/// Longest raw `baggage` header: room for the percent-encoding of 8 KiB of entries.
pub(crate) const MAX_BAGGAGE_HEADER_LEN: usize = 4 * MAX_BAGGAGE_BYTES;

/// A carrier the context is read from.
pub(crate) trait Source {
    /// The raw value of `name` (`None` when absent, an error when repeated)
    /// and, for HTTP, the header value itself (kept so that injecting the same
    /// value again costs no allocation).
    fn get(&self, name: &HeaderName) -> Found<'_>;

    /// Every context header at once (by default one [`get`](Source::get) each;
    /// `scan`, when given, is `names` prepared for a pass over the carrier).
    fn fields<'a>(&'a self, names: &HeaderNames, _scan: Option<&NameScan>) -> Fields<'a> {
        lookup_fields(self, names)
    }
}

/// [`Source::fields`] by one [`Source::get`] per field.
fn lookup_fields<'a, S: Source + ?Sized>(src: &'a S, names: &HeaderNames) -> Fields<'a> {
    Fields {
        cell: src.get(&names.cell),
        request_id: src.get(&names.request_id),
        tenant: src.get(&names.tenant),
        auth_user: src.get(&names.auth_user),
        routing_key: src.get(&names.routing_key),
        xid: src.get(&names.xid),
        region_hint: src.get(&names.region_hint),
        downgraded: src.get(&names.downgraded),
        traceparent: src.get(&TRACEPARENT),
        tracestate: src.get(&TRACESTATE),
        baggage: src.get(&BAGGAGE),
    }
}

/// A raw header value and, for HTTP, the header value itself.
pub(crate) type RawValue<'a> = Option<(&'a [u8], Option<&'a HeaderValue>)>;

/// What a carrier holds for one header: its value, none, or an error (repeated).
pub(crate) type Found<'a> = Result<RawValue<'a>, InvalidValue>;

const REPEATED: InvalidValue = InvalidValue::Malformed("repeated header");

/// The context headers found in a carrier, one per field.
pub(crate) struct Fields<'a> {
    cell: Found<'a>,
    request_id: Found<'a>,
    tenant: Found<'a>,
    auth_user: Found<'a>,
    routing_key: Found<'a>,
    xid: Found<'a>,
    region_hint: Found<'a>,
    downgraded: Found<'a>,
    traceparent: Found<'a>,
    tracestate: Found<'a>,
    baggage: Found<'a>,
}

impl<'a> Fields<'a> {
    /// No header found.
    const EMPTY: Fields<'a> = Fields {
        cell: Ok(None),
        request_id: Ok(None),
        tenant: Ok(None),
        auth_user: Ok(None),
        routing_key: Ok(None),
        xid: Ok(None),
        region_hint: Ok(None),
        downgraded: Ok(None),
        traceparent: Ok(None),
        tracestate: Ok(None),
        baggage: Ok(None),
    };

    /// Field `i`, in the order of [`HeaderNames::field`].
    #[inline]
    fn slot(&mut self, i: usize) -> &mut Found<'a> {
        match i {
            0 => &mut self.cell,
            1 => &mut self.request_id,
            2 => &mut self.tenant,
            3 => &mut self.auth_user,
            4 => &mut self.routing_key,
            5 => &mut self.xid,
            6 => &mut self.region_hint,
            7 => &mut self.downgraded,
            8 => &mut self.traceparent,
            9 => &mut self.tracestate,
            _ => &mut self.baggage,
        }
    }
}

/// Up to this many header values, [`HeaderMap`] finds the context headers in
/// one pass over the map (a name comparison per field and value) rather than
/// with one hashed lookup per field (11 lookups, most of them misses).
const SCAN_MAX: usize = 20;

impl Source for HeaderMap {
    fn get(&self, name: &HeaderName) -> Found<'_> {
        let mut values = self.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => Ok(None),
            (Some(v), None) => Ok(Some((v.as_bytes(), Some(v)))),
            (Some(_), Some(_)) => Err(REPEATED),
        }
    }

    fn fields<'a>(&'a self, names: &HeaderNames, scan: Option<&NameScan>) -> Fields<'a> {
        if self.len() > SCAN_MAX {
            return lookup_fields(self, names);
        }
        let made;
        let scan = match scan {
            Some(scan) => scan,
            None => {
                made = NameScan::new(names);
                &made
            }
        };
        let mut fields = Fields::EMPTY;
        for (name, value) in self {
            scan.each_field(name.as_str().as_bytes(), |i| {
                let slot = fields.slot(i);
                *slot = match slot {
                    Ok(None) => Ok(Some((value.as_bytes(), Some(value)))),
                    _ => Err(REPEATED),
                };
            });
        }
        fields
    }
}

/// The header values a context was read from, reused by [`inject`] while the
/// fields still hold the same text. Never part of equality.
#[derive(Clone, Default)]
pub(crate) struct RawCache {
    pub(crate) cell: Option<HeaderValue>,
    /// Whether `request_id` was generated here rather than read from the carrier.
    pub(crate) request_id_generated: bool,
    pub(crate) region_hint: Option<HeaderValue>,
}

impl PartialEq for RawCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RawCache {}

impl std::fmt::Debug for RawCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

/// `cached` when it still holds exactly `text`.
fn reuse(cached: &Option<HeaderValue>, text: &[u8]) -> Option<HeaderValue> {
    cached.as_ref().filter(|v| v.as_bytes() == text).cloned()
}

/// `cached` when it still spells `hint` (`<region>;src=<source>`).
fn reuse_hint(cached: &Option<HeaderValue>, hint: &RegionHint) -> Option<HeaderValue> {
    let v = cached.as_ref()?;
    let rest = v.as_bytes().strip_prefix(hint.region.as_str().as_bytes())?;
    let src = rest.strip_prefix(b";src=")?;
    (src == hint.source.as_str().as_bytes()).then(|| v.clone())
}

/// Reads the context from `headers`.
///
/// A missing request id is generated (time-ordered, see [`crate::request_id`]).
/// Malformed or repeated values are [`ContextError::Malformed`], values over
/// their bound [`ContextError::Oversized`]. An invalid `traceparent` is ignored
/// (with its `tracestate`), as the W3C Trace Context spec asks: the trace restarts.
///
/// ```
/// use cellctx::{extract, HeaderNames};
/// use http::HeaderMap;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-cell-id", "eu-west-1".parse().unwrap());
/// headers.insert("x-tenant-id", "acme".parse().unwrap());
/// let ctx = extract(&headers, &HeaderNames::default()).unwrap();
/// assert_eq!(ctx.cell().unwrap().as_str(), "eu-west-1");
/// assert_eq!(ctx.tenant.as_deref(), Some("acme"));
/// assert!(!ctx.request_id.is_empty()); // generated
///
/// headers.insert("x-cell-id", "EU West".parse().unwrap());
/// let err = extract(&headers, &HeaderNames::default()).unwrap_err();
/// assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
/// ```
pub fn extract(headers: &HeaderMap, names: &HeaderNames) -> Result<CellContext, ContextError> {
    extract_from(headers, names)
}

/// Writes the context into `headers`, replacing values already there; absent
/// fields leave their headers alone. Each value is checked against the same rules
/// [`extract`] applies, so the next hop accepts what this one sends; on error
/// nothing is written.
///
/// ```
/// use cellctx::{inject, CellContext, CellId, HeaderNames};
/// use http::HeaderMap;
///
/// let ctx = CellContext::new().with_cell(CellId::new("eu-west-1").unwrap()).with_tenant("acme").unwrap();
/// let mut headers = HeaderMap::new();
/// inject(&ctx, &HeaderNames::default(), &mut headers).unwrap();
/// assert_eq!(headers["x-cell-id"], "eu-west-1");
/// assert_eq!(headers["x-request-id"], ctx.request_id.as_str());
/// ```
pub fn inject(ctx: &CellContext, names: &HeaderNames, headers: &mut HeaderMap) -> Result<(), ContextError> {
    let mut out: [Option<(HeaderName, HeaderValue)>; FIELDS] = Default::default();
    let mut n = 0;
    let mut first_err = None;
    encode_fields(ctx, names, |_, name, value| match value {
        Ok(v) => {
            if let Some(slot) = out.get_mut(n) {
                *slot = Some((name.clone(), v));
                n += 1;
            }
        }
        Err(e) => {
            first_err.get_or_insert(e);
        }
    });
    if let Some(e) = first_err {
        return Err(e);
    }
    for (name, value) in out.into_iter().flatten() {
        headers.insert(name, value);
    }
    Ok(())
}


type Text<'a> = Option<(&'a str, Option<&'a HeaderValue>)>;

/// A header value as text: at most `max` bytes of visible ASCII, space or tab.
fn text_value<'a>(found: Found<'a>, name: &HeaderName, max: usize) -> Result<Text<'a>, ContextError> {
    let Some((raw, hv)) = found.map_err(|r| ContextError::for_header(name, r))? else {
        return Ok(None);
    };
    if raw.len() > max {
        return Err(ContextError::Oversized { header: name.clone(), reason: InvalidValue::TooLong { max } });
    }
    if !raw.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        return Err(ContextError::Malformed { header: name.clone(), reason: InvalidValue::BadCharacter });
    }
    std::str::from_utf8(raw)
        .map(|s| Some((s, hv)))
        .map_err(|_| ContextError::Malformed { header: name.clone(), reason: InvalidValue::BadCharacter })
}

/// A token header: one pass over the bytes (the checks and errors of
/// [`text_value`] then [`crate::validate_token`]); the header value is shared, not copied.
fn token(found: Found<'_>, name: &HeaderName) -> Result<Option<Token>, ContextError> {
    let Some((raw, hv)) = found.map_err(|r| ContextError::for_header(name, r))? else {
        return Ok(None);
    };
    check_token(raw).map_err(|r| ContextError::for_header(name, r))?;
    Ok(Some(shared(raw, hv).marked(Token::TOKEN)))
}

/// A token for `raw` (already checked to be text): the header value itself
/// when there is one, else a copy (Kafka headers).
fn shared(raw: &[u8], hv: Option<&HeaderValue>) -> Token {
    match hv {
        Some(hv) => Token::from_checked(hv.clone()),
        None => Token::from_checked(
            HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(raw))
                .unwrap_or_else(|_| HeaderValue::from_static("-")),
        ),
    }
}

/// [`crate::validate_token`] on bytes.
pub(crate) fn check_token(raw: &[u8]) -> Result<(), InvalidValue> {
    if raw.len() > MAX_TOKEN_LEN {
        return Err(InvalidValue::TooLong { max: MAX_TOKEN_LEN });
    }
    if raw.is_empty() {
        return Err(InvalidValue::Empty);
    }
    if !crate::swar::all_token_bytes(raw) {
        return Err(InvalidValue::BadCharacter);
    }
    Ok(())
}


/// Reads a context from any carrier.
pub(crate) fn extract_from<S: Source + ?Sized>(src: &S, names: &HeaderNames) -> Result<CellContext, ContextError> {
    extract_scanned(src, names, None)
}

/// [`extract_from`] with the names already prepared for the scan (the server layer's).
pub(crate) fn extract_scanned<S: Source + ?Sized>(
    src: &S,
    names: &HeaderNames,
    scan: Option<&NameScan>,
) -> Result<CellContext, ContextError> {
    let f = src.fields(names, scan);
    let cell = match text_value(f.cell, &names.cell, MAX_CELL_ID_LEN)? {
        Some((v, hv)) => Some((CellId::new(v).map_err(|r| ContextError::for_header(&names.cell, r))?, hv)),
        None => None,
    };
    let mut ctx = match token(f.request_id, &names.request_id)? {
        Some(id) => CellContext::with_request_token(id, false),
        None => CellContext::with_request_token(crate::request_id::generate_token(), true),
    };
    let raw = &mut ctx.raw;
    if let Some((cell, hv)) = cell {
        ctx.cell = Some(cell);
        raw.cell = hv.cloned();
    }
    ctx.tenant = token(f.tenant, &names.tenant)?;
    ctx.auth_user = token(f.auth_user, &names.auth_user)?;
    ctx.routing_key = token(f.routing_key, &names.routing_key)?;
    ctx.xid = token(f.xid, &names.xid)?;
    if let Some((v, hv)) = text_value(f.region_hint, &names.region_hint, MAX_REGION_HINT_LEN)? {
        ctx.region_hint =
            Some(v.parse::<RegionHint>().map_err(|r| ContextError::for_header(&names.region_hint, r))?);
        raw.region_hint = hv.cloned();
    }
    if let Some((v, _)) = text_value(f.downgraded, &names.downgraded, MAX_FLAG_LEN)? {
        ctx.downgraded = parse_flag(v).map_err(|r| ContextError::for_header(&names.downgraded, r))?;
    }
    // W3C: an unusable (or repeated) traceparent is ignored, and then so is tracestate.
    if let Ok(Some((tp, hv))) = f.traceparent
        && is_traceparent(tp)
    {
        ctx.traceparent = Some(shared(tp, hv).marked(Token::TRACEPARENT));
        if let Ok(Some((ts, hv))) = f.tracestate
            && valid_tracestate(ts).is_some()
        {
            ctx.tracestate = Some(shared(ts, hv));
        }
    }
    if let Some((v, _)) = text_value(f.baggage, &BAGGAGE, MAX_BAGGAGE_HEADER_LEN)? {
        ctx.baggage = parse_baggage(v).map_err(|r| ContextError::for_header(&BAGGAGE, r))?;
    }
    Ok(ctx)
}

fn parse_flag(v: &str) -> Result<bool, InvalidValue> {
    if v.eq_ignore_ascii_case("true") || v == "1" {
        Ok(true)
    } else if v.eq_ignore_ascii_case("false") || v == "0" {
        Ok(false)
    } else {
        Err(InvalidValue::Malformed("expected true or false"))
    }
}

/// Calls `emit` for each header the context writes, in a fixed order (the
/// field's index in that order comes first: cell 0, request id 1, tenant 2,
/// authenticated user 3, routing key 4, xid 5, region hint 6, downgraded 7,
/// `traceparent` 8, `tracestate` 9, `baggage` 10), with the value or why the
/// field cannot be written.
pub(crate) fn encode_fields(
    ctx: &CellContext,
    names: &HeaderNames,
    mut emit: impl FnMut(usize, &HeaderName, Result<HeaderValue, ContextError>),
) {
    fn value(name: &HeaderName, v: &str) -> Result<HeaderValue, ContextError> {
        HeaderValue::from_str(v).map_err(|_| ContextError::Malformed { header: name.clone(), reason: InvalidValue::BadCharacter })
    }
    fn tok(name: &HeaderName, v: &Token) -> Result<HeaderValue, ContextError> {
        // A value read at extraction (or set through a `with_*` setter) was checked then.
        if !v.is_marked(Token::TOKEN) {
            check_token(v.as_bytes()).map_err(|r| ContextError::for_header(name, r))?;
        }
        Ok(v.as_header_value().clone())
    }
    let raw = &ctx.raw;
    if let Some(cell) = ctx.cell() {
        let v = match reuse(&raw.cell, cell.as_bytes()) {
            Some(hv) => Ok(hv),
            None => value(&names.cell, cell.as_str()),
        };
        emit(0, &names.cell, v);
    }
    emit(1, &names.request_id, tok(&names.request_id, &ctx.request_id));
    for (i, name, field) in [
        (2, &names.tenant, &ctx.tenant),
        (3, &names.auth_user, &ctx.auth_user),
        (4, &names.routing_key, &ctx.routing_key),
        (5, &names.xid, &ctx.xid),
    ] {
        if let Some(v) = field {
            emit(i, name, tok(name, v));
        }
    }
    if let Some(hint) = &ctx.region_hint {
        let v = match reuse_hint(&raw.region_hint, hint) {
            Some(hv) => Ok(hv),
            None => value(&names.region_hint, &hint.to_string()),
        };
        emit(6, &names.region_hint, v);
    }
    if ctx.downgraded {
        emit(7, &names.downgraded, Ok(HeaderValue::from_static("true")));
    }
    if let Some(tp) = &ctx.traceparent {
        // A value read at extraction (or set through `with_traceparent`) was checked then.
        let v = if tp.is_marked(Token::TRACEPARENT) || is_traceparent(tp.as_bytes()) {
            Ok(tp.as_header_value().clone())
        } else {
            Err(ContextError::Malformed { header: TRACEPARENT, reason: InvalidValue::Malformed("not a W3C traceparent") })
        };
        emit(8, &TRACEPARENT, v);
    }
    if let Some(ts) = &ctx.tracestate {
        let v = match valid_tracestate(ts.as_bytes()) {
            Some(_) => Ok(ts.as_header_value().clone()),
            None => Err(ContextError::for_header(&TRACESTATE, if ts.len() > MAX_TRACESTATE_LEN {
                InvalidValue::TooLong { max: MAX_TRACESTATE_LEN }
            } else {
                InvalidValue::BadCharacter
            })),
        };
        emit(9, &TRACESTATE, v);
    }
    if !ctx.baggage.is_empty() {
        let v = encode_baggage(&ctx.baggage).map_err(|r| ContextError::for_header(&BAGGAGE, r));
        emit(10, &BAGGAGE, v.and_then(|s| value(&BAGGAGE, &s)));
    }
}

fn is_lower_hex(b: &[u8]) -> bool {
    // Branch-free over the slice: the bytes of `0-9a-f`.
    b.iter().fold(true, |ok, &c| ok & (c.wrapping_sub(b'0') < 10 || c.wrapping_sub(b'a') < 6))
}

/// `raw` as a string when it is a usable W3C `traceparent`.
#[cfg(test)]
fn valid_traceparent(raw: &[u8]) -> Option<&str> {
    if is_traceparent(raw) { std::str::from_utf8(raw).ok() } else { None }
}

/// Whether `raw` is a usable W3C `traceparent` (then it is visible ASCII).
pub(crate) fn is_traceparent(raw: &[u8]) -> bool {
    if raw.len() < 55 || raw.len() > MAX_TRACEPARENT_LEN {
        return false;
    }
    let (version, trace_id, span_id, flags) = (&raw[0..2], &raw[3..35], &raw[36..52], &raw[53..55]);
    let dashes = raw[2] == b'-' && raw[35] == b'-' && raw[52] == b'-';
    let hex = is_lower_hex(version) && is_lower_hex(trace_id) && is_lower_hex(span_id) && is_lower_hex(flags);
    if !(dashes && hex) {
        return false;
    }
    let nonzero = trace_id.iter().any(|&c| c != b'0') && span_id.iter().any(|&c| c != b'0');
    let tail_ok = if version == b"00" {
        raw.len() == 55
    } else {
        version != b"ff" && (raw.len() == 55 || raw[55] == b'-')
    };
    // The first 55 bytes are hex digits and dashes (checked above): only a
    // later version's tail needs the visible-ASCII check.
    let visible = raw[55..].iter().all(|&b| (0x21..0x7f).contains(&b));
    nonzero && tail_ok && visible
}

/// `raw` as a string when it can ride along as `tracestate`.
pub(crate) fn valid_tracestate(raw: &[u8]) -> Option<&str> {
    if raw.is_empty() || raw.len() > MAX_TRACESTATE_LEN {
        return None;
    }
    if !raw.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        return None;
    }
    std::str::from_utf8(raw).ok()
}

/// RFC 9110 `tchar`.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// W3C baggage-octet: printable ASCII but space, `"`, `,`, `;` and `\`.
fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// Parses a W3C `baggage` value. Member properties (`;prop`) are dropped;
/// values are percent-decoded and must be UTF-8.
pub(crate) fn parse_baggage(v: &str) -> Result<Baggage, InvalidValue> {
    let mut baggage = Baggage::new();
    for member in v.split(',') {
        let member = trim_ows(member);
        if member.is_empty() {
            continue;
        }
        let kv = member.split(';').next().unwrap_or(member);
        let (key, value) = kv.split_once('=').ok_or(InvalidValue::Malformed("baggage member without '='"))?;
        let (key, value) = (trim_ows(key), trim_ows(value));
        if key.is_empty() || !key.bytes().all(is_tchar) {
            return Err(InvalidValue::Malformed("baggage key is not a token"));
        }
        baggage.insert(key, percent_decode(value)?)?;
    }
    Ok(baggage)
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(v: &str) -> Result<String, InvalidValue> {
    if !v.contains('%') {
        if v.bytes().all(is_baggage_octet) {
            return Ok(v.to_owned());
        }
        return Err(InvalidValue::Malformed("baggage value holds a character that must be percent-encoded"));
    }
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_val);
            let lo = bytes.get(i + 2).copied().and_then(hex_val);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(InvalidValue::Malformed("bad percent-encoding in baggage value")),
            }
            i += 3;
        } else if is_baggage_octet(b) {
            out.push(b);
            i += 1;
        } else {
            return Err(InvalidValue::Malformed("baggage value holds a character that must be percent-encoded"));
        }
    }
    String::from_utf8(out).map_err(|_| InvalidValue::Malformed("baggage value is not UTF-8"))
}

/// Encodes baggage as a W3C `baggage` value (keys must be tokens).
pub(crate) fn encode_baggage(baggage: &Baggage) -> Result<String, InvalidValue> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::new();
    for (i, (key, value)) in baggage.iter().enumerate() {
        if key.is_empty() || !key.bytes().all(is_tchar) {
            return Err(InvalidValue::Malformed("baggage key is not a token"));
        }
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push('=');
        for b in value.bytes() {
            if is_baggage_octet(b) && b != b'%' {
                out.push(char::from(b));
            } else {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_long_configured_name_is_matched_in_full() {
        // Same length, same first and last eight bytes: only the middle differs.
        let names = HeaderNames::default().with_tenant(HeaderName::from_static("x-organisation-identifier"));
        let mut headers = HeaderMap::new();
        headers.insert("x-organisXXXon-identifier", HeaderValue::from_static("decoy"));
        assert_eq!(extract(&headers, &names).unwrap().tenant, None);
        headers.insert("x-organisation-identifier", HeaderValue::from_static("acme"));
        assert_eq!(extract(&headers, &names).unwrap().tenant.as_deref(), Some("acme"));
    }

    #[test]
    fn traceparent_rules() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(valid_traceparent(ok.as_bytes()), Some(ok));
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(valid_traceparent(bad.as_bytes()), None, "{bad}");
        }
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-abc";
        assert_eq!(valid_traceparent(future.as_bytes()), Some(future));
    }

    #[test]
    fn baggage_decodes_and_encodes() {
        let b = parse_baggage(" user=alice%20smith ; p=1 ,, plan=gold").unwrap();
        assert_eq!(b.get("user"), Some("alice smith"));
        assert_eq!(b.get("plan"), Some("gold"));
        assert_eq!(encode_baggage(&b).unwrap(), "user=alice%20smith,plan=gold");
        assert!(parse_baggage("novalue").is_err());
        assert!(parse_baggage("k=%zz").is_err());
        assert!(parse_baggage("k=%ff").is_err());
        assert!(parse_baggage("bad key=v").is_err());
    }

    #[test]
    fn repeated_header_is_malformed() {
        let mut h = HeaderMap::new();
        h.append("x-tenant-id", HeaderValue::from_static("a"));
        h.append("x-tenant-id", HeaderValue::from_static("b"));
        let err = extract(&h, &HeaderNames::default()).unwrap_err();
        assert_eq!(err, ContextError::Malformed {
            header: HeaderName::from_static("x-tenant-id"),
            reason: InvalidValue::Malformed("repeated header"),
        });
    }

    #[test]
    fn reused_header_values_never_go_stale() {
        let names = HeaderNames::default();
        let mut h = HeaderMap::new();
        h.insert("x-tenant-id", HeaderValue::from_static("acme"));
        h.insert("x-cell-id", HeaderValue::from_static("eu-1"));
        let mut ctx = extract(&h, &names).unwrap();
        ctx.tenant = Some("globex".parse().unwrap());
        ctx.set_cell(Some(CellId::new("eu-2").unwrap()));
        let mut out = HeaderMap::new();
        inject(&ctx, &names, &mut out).unwrap();
        assert_eq!(out["x-tenant-id"], "globex");
        assert_eq!(out["x-cell-id"], "eu-2");
        ctx.tenant = Some("bad tenant".parse().unwrap());
        assert!(inject(&ctx, &names, &mut HeaderMap::new()).is_err());
    }

    #[test]
    fn scanning_and_lookups_read_the_same() {
        let names = HeaderNames::default().with_routing_key(HeaderName::from_static("x-tenant-id"));
        for filler in [0, 4, SCAN_MAX + 1] {
            let mut h = HeaderMap::new();
            for i in 0..filler {
                h.insert(HeaderName::try_from(format!("x-filler-{i}")).unwrap(), HeaderValue::from_static("f"));
            }
            h.insert(http::header::USER_AGENT, HeaderValue::from_static("t"));
            h.insert("x-cell-id", HeaderValue::from_static("eu-1"));
            h.insert("x-tenant-id", HeaderValue::from_static("acme"));
            h.insert("x-region-hint", HeaderValue::from_static("eu;src=gps"));
            h.insert("traceparent", HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
            h.insert("tracestate", HeaderValue::from_static("a=1"));
            let ctx = extract(&h, &names).unwrap();
            assert_eq!(ctx.cell().map(CellId::as_str), Some("eu-1"), "{filler}");
            // Two fields configured with one name both read it.
            assert_eq!((ctx.tenant.as_deref(), ctx.routing_key.as_deref()), (Some("acme"), Some("acme")));
            assert_eq!(ctx.region_hint.as_ref().map(ToString::to_string).as_deref(), Some("eu;src=gps"));
            assert_eq!(ctx.tracestate.as_deref(), Some("a=1"));
            assert_eq!(ctx.auth_user, None);
            assert!(ctx.raw.request_id_generated);
            h.append("x-cell-id", HeaderValue::from_static("eu-2"));
            assert_eq!(extract(&h, &names).unwrap_err(), ContextError::Malformed {
                header: HeaderName::from_static("x-cell-id"),
                reason: InvalidValue::Malformed("repeated header"),
            });
            h.insert("x-cell-id", HeaderValue::from_static("eu-1"));
            h.append("traceparent", HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b7-01"));
            let ctx = extract(&h, &names).unwrap();
            assert_eq!((ctx.traceparent, ctx.tracestate), (None, None), "a repeated traceparent is ignored");
        }
    }

    #[test]
    fn fields_share_the_header_bytes_both_ways() {
        let names = HeaderNames::default();
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("r-1"));
        h.insert("x-tenant-id", HeaderValue::from_static("acme"));
        h.insert("x-user-id", HeaderValue::from_static("u-42"));
        h.insert("traceparent", HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        h.insert("tracestate", HeaderValue::from_static("a=1, b=2"));
        let ctx = extract(&h, &names).unwrap();
        assert!(!ctx.raw.request_id_generated);
        let fields = [
            ("x-request-id", Some(&ctx.request_id)),
            ("x-tenant-id", ctx.tenant.as_ref()),
            ("x-user-id", ctx.routing_key.as_ref()),
            ("traceparent", ctx.traceparent.as_ref()),
            ("tracestate", ctx.tracestate.as_ref()),
        ];
        let mut out = HeaderMap::new();
        inject(&ctx, &names, &mut out).unwrap();
        for (name, field) in fields {
            let field = field.unwrap();
            assert_eq!(field.as_bytes(), h[name].as_bytes(), "{name}");
            assert_eq!(field.as_bytes().as_ptr(), h[name].as_bytes().as_ptr(), "{name}: extraction copied");
            assert_eq!(out[name].as_bytes().as_ptr(), h[name].as_bytes().as_ptr(), "{name}: injection copied");
        }
        // A generated id is written out too.
        let ctx = extract(&HeaderMap::new(), &names).unwrap();
        assert!(ctx.raw.request_id_generated);
        let mut out = HeaderMap::new();
        inject(&ctx, &names, &mut out).unwrap();
        assert_eq!(out["x-request-id"], ctx.request_id.as_str());
    }

    #[test]
    fn reused_hint_and_tracestate_never_go_stale() {
        let names = HeaderNames::default();
        let mut h = HeaderMap::new();
        h.insert("x-region-hint", HeaderValue::from_static("eu;src=gps"));
        h.insert("traceparent", HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        h.insert("tracestate", HeaderValue::from_static("a=1"));
        let mut ctx = extract(&h, &names).unwrap();
        let mut out = HeaderMap::new();
        inject(&ctx, &names, &mut out).unwrap();
        assert_eq!((&out["x-region-hint"], &out["tracestate"]), (&h["x-region-hint"], &h["tracestate"]));
        ctx.region_hint = Some("eu;src=ip".parse().unwrap());
        ctx.tracestate = Some("b=2".parse().unwrap());
        inject(&ctx, &names, &mut out).unwrap();
        assert_eq!(out["x-region-hint"], "eu;src=ip");
        assert_eq!(out["tracestate"], "b=2");
        ctx.region_hint = Some("eu-2;src=gps".parse().unwrap());
        inject(&ctx, &names, &mut out).unwrap();
        assert_eq!(out["x-region-hint"], "eu-2;src=gps");
    }

    #[test]
    fn inject_refuses_invalid_fields_and_writes_nothing() {
        let mut ctx = CellContext::new().with_tenant("acme").unwrap();
        ctx.auth_user = Some("bad user".parse().unwrap());
        let mut h = HeaderMap::new();
        let err = inject(&ctx, &HeaderNames::default(), &mut h).unwrap_err();
        assert_eq!(err.kind(), "malformed");
        assert!(h.is_empty());
    }
}
