//! [`CellContext`]: what a request carries from hop to hop.

use std::fmt;
use std::str::FromStr;

use crate::cell_id::CellId;
use crate::error::InvalidValue;
use crate::token::Token;

/// Longest tenant id, user id, routing key or request id, in bytes.
pub const MAX_TOKEN_LEN: usize = 128;

/// Validates a token value (tenant, user, routing key, request id): 1 to 128
/// visible ASCII bytes, no spaces, commas or semicolons.
pub fn validate_token(s: &str) -> Result<(), InvalidValue> {
    crate::codec::check_token(s.as_bytes())
}

/// Where a region hint came from; the router trusts them in this order:
/// GPS first, then the phone number's prefix, then the client IP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HintSource {
    /// A GPS fix from the device (most trusted).
    Gps,
    /// The country/area prefix of the user's phone number.
    Phone,
    /// The client's IP address, through a CIDR table (least trusted).
    Ip,
}

impl HintSource {
    /// The wire name: `gps`, `phone` or `ip`.
    pub fn as_str(self) -> &'static str {
        match self {
            HintSource::Gps => "gps",
            HintSource::Phone => "phone",
            HintSource::Ip => "ip",
        }
    }
}

/// A hint of the user's region, with where it came from.
///
/// Header form: `<region>;src=<gps|phone|ip>`, e.g. `eu-west;src=gps`. The region
/// is validated like a [`CellId`] (lowercase letters, digits, `-`, at most 32 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegionHint {
    /// The region name.
    pub region: CellId,
    /// Where the hint came from.
    pub source: HintSource,
}

impl FromStr for RegionHint {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (region, src) = s.split_once(";src=").ok_or(InvalidValue::Malformed("expected <region>;src=<gps|phone|ip>"))?;
        let source = match src {
            "gps" => HintSource::Gps,
            "phone" => HintSource::Phone,
            "ip" => HintSource::Ip,
            _ => return Err(InvalidValue::Malformed("src must be gps, phone or ip")),
        };
        Ok(RegionHint { region: CellId::new(region)?, source })
    }
}

impl fmt::Display for RegionHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{};src={}", self.region, self.source.as_str())
    }
}

/// The request's cell context, carried on every hop (HTTP, gRPC, Kafka).
///
/// The server layer builds it from headers, stores it (as `Arc<CellContext>`) in
/// the request extensions and in a task-local scope ([`crate::current`]); the client
/// layer and the Kafka carrier write it back out.
///
/// The text fields are [`Token`]s: read from HTTP headers they share the
/// incoming header bytes and are written out again as the same header values,
/// so carrying a context costs no allocation per field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CellContext {
    /// The cell named by the request (`X-Cell-ID`) or set with
    /// [`with_cell`](CellContext::with_cell); see [`cell`](CellContext::cell).
    pub(crate) cell: Option<CellId>,
    /// The cell the router chose for this request (set once, through a shared
    /// reference: see [`route_to`](CellContext::route_to)); overrides `cell`.
    routed: std::sync::OnceLock<CellId>,
    /// The request id (`X-Request-ID`); generated, time-ordered, when absent.
    pub request_id: Token,
    /// The tenant (`X-Tenant-ID`).
    pub tenant: Option<Token>,
    /// The authenticated user (`X-Auth-User`), set by the edge after authentication.
    pub auth_user: Option<Token>,
    /// The routing key, usually the user id (`X-User-ID`).
    pub routing_key: Option<Token>,
    /// The region hint (`X-Region-Hint`).
    pub region_hint: Option<RegionHint>,
    /// Whether some hop served this request degraded (`X-Downgraded: true`).
    pub downgraded: bool,
    /// The distributed transaction id of a saga this request belongs to (`X-Xid`).
    pub xid: Option<Token>,
    /// W3C `traceparent`, passed on unchanged.
    pub traceparent: Option<Token>,
    /// W3C `tracestate`, passed on unchanged.
    pub tracestate: Option<Token>,
    /// W3C `baggage` entries (bounded: see [`crate::Baggage`]).
    pub baggage: crate::baggage::Baggage,
    /// The header values this context was read from (reused on injection).
    pub(crate) raw: crate::codec::RawCache,
}

impl Default for CellContext {
    /// An empty context with a fresh request id (as [`CellContext::new`]).
    fn default() -> Self {
        CellContext::new()
    }
}

/// A value for one of the `with_*` setters: a `&str`, `String` or [`Token`].
fn to_token<T>(value: T) -> Result<Token, InvalidValue>
where
    T: TryInto<Token>,
    InvalidValue: From<T::Error>,
{
    Ok(value.try_into()?)
}

impl CellContext {
    /// An empty context with a fresh request id.
    pub fn new() -> Self {
        CellContext::with_request_token(crate::request_id::generate_token(), true)
    }

    /// An empty context with this request id.
    pub(crate) fn with_request_token(request_id: Token, generated: bool) -> Self {
        CellContext {
            cell: None,
            routed: std::sync::OnceLock::new(),
            request_id,
            tenant: None,
            auth_user: None,
            routing_key: None,
            region_hint: None,
            downgraded: false,
            xid: None,
            traceparent: None,
            tracestate: None,
            baggage: crate::baggage::Baggage::default(),
            raw: crate::codec::RawCache { request_id_generated: generated, ..Default::default() },
        }
    }

    /// The cell serving (or chosen to serve) the request: the one the router
    /// chose ([`route_to`](CellContext::route_to)), else the one the request
    /// named (`X-Cell-ID`) or that was set. This is what the client layer sends on.
    #[inline]
    pub fn cell(&self) -> Option<&CellId> {
        self.routed.get().or(self.cell.as_ref())
    }

    /// Sets the cell (replacing any cell chosen by [`route_to`](CellContext::route_to)).
    pub fn with_cell(mut self, cell: CellId) -> Self {
        self.set_cell(Some(cell));
        self
    }

    /// Sets or clears the cell (replacing any cell chosen by
    /// [`route_to`](CellContext::route_to)).
    pub fn set_cell(&mut self, cell: Option<CellId>) {
        self.cell = cell;
        self.routed = std::sync::OnceLock::new();
    }

    /// Records `cell` as the cell serving the request, through a shared
    /// reference: a router does this on the context the server layer already
    /// shares (extensions, task-local scope), with no copy. The cell can be
    /// chosen once: returns whether the context now names `cell` (false when
    /// another cell was chosen before; copy the context and use
    /// [`with_cell`](CellContext::with_cell) then).
    ///
    /// ```
    /// use cellctx::{CellContext, CellId};
    ///
    /// let ctx = CellContext::new().with_cell(CellId::new("stale-1").unwrap());
    /// assert!(ctx.route_to(&CellId::new("eu-1").unwrap()));
    /// assert_eq!(ctx.cell().map(CellId::as_str), Some("eu-1"));
    /// assert!(!ctx.route_to(&CellId::new("eu-2").unwrap()), "chosen once");
    /// ```
    pub fn route_to(&self, cell: &CellId) -> bool {
        if self.cell() == Some(cell) {
            return true;
        }
        self.routed.set(cell.clone()).is_ok()
    }

    /// Sets the tenant (a `&str`, `String` or [`Token`], validated as a token).
    pub fn with_tenant<T>(mut self, tenant: T) -> Result<Self, InvalidValue>
    where
        T: TryInto<Token>,
        InvalidValue: From<T::Error>,
    {
        let t = to_token(tenant)?;
        validate_token(&t)?;
        let t = t.marked(Token::TOKEN);
        self.tenant = Some(t);
        Ok(self)
    }

    /// Sets the routing key (a `&str`, `String` or [`Token`], validated as a token).
    pub fn with_routing_key<T>(mut self, key: T) -> Result<Self, InvalidValue>
    where
        T: TryInto<Token>,
        InvalidValue: From<T::Error>,
    {
        let k = to_token(key)?;
        validate_token(&k)?;
        let k = k.marked(Token::TOKEN);
        self.routing_key = Some(k);
        Ok(self)
    }

    /// Sets the authenticated user (a `&str`, `String` or [`Token`], validated as a token).
    pub fn with_auth_user<T>(mut self, user: T) -> Result<Self, InvalidValue>
    where
        T: TryInto<Token>,
        InvalidValue: From<T::Error>,
    {
        let u = to_token(user)?;
        validate_token(&u)?;
        let u = u.marked(Token::TOKEN);
        self.auth_user = Some(u);
        Ok(self)
    }

    /// Sets the region hint.
    pub fn with_region_hint(mut self, hint: RegionHint) -> Self {
        self.region_hint = Some(hint);
        self
    }

    /// Sets the request id (a `&str`, `String` or [`Token`], validated as a token).
    pub fn with_request_id<T>(mut self, id: T) -> Result<Self, InvalidValue>
    where
        T: TryInto<Token>,
        InvalidValue: From<T::Error>,
    {
        let id = to_token(id)?;
        validate_token(&id)?;
        let id = id.marked(Token::TOKEN);
        self.request_id = id;
        self.raw.request_id_generated = false;
        Ok(self)
    }

    /// Sets the saga transaction id (a `&str`, `String` or [`Token`], validated as a token).
    pub fn with_xid<T>(mut self, xid: T) -> Result<Self, InvalidValue>
    where
        T: TryInto<Token>,
        InvalidValue: From<T::Error>,
    {
        let x = to_token(xid)?;
        validate_token(&x)?;
        let x = x.marked(Token::TOKEN);
        self.xid = Some(x);
        Ok(self)
    }

    /// Sets the W3C `traceparent` (validated: version, 32-hex trace id, 16-hex
    /// span id, flags, lowercase).
    pub fn with_traceparent<T>(mut self, traceparent: T) -> Result<Self, InvalidValue>
    where
        T: TryInto<Token>,
        InvalidValue: From<T::Error>,
    {
        let tp = to_token(traceparent)?;
        if !crate::codec::is_traceparent(tp.as_bytes()) {
            return Err(InvalidValue::Malformed("not a W3C traceparent"));
        }
        self.traceparent = Some(tp.marked(Token::TRACEPARENT));
        Ok(self)
    }

    /// The W3C trace id (32 hex digits) from `traceparent`, if present.
    pub fn trace_id(&self) -> Option<&str> {
        self.traceparent.as_deref().and_then(|tp| tp.split('-').nth(1))
    }
}
