//! [`HeaderNames`]: which headers carry which part of the context.

use std::borrow::Cow;

use http::HeaderName;

/// W3C `traceparent` (fixed name).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// W3C `tracestate` (fixed name).
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// W3C `baggage` (fixed name).
pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// The hop counter a cell router keeps (`X-Cell-Hops`): stripped at the edge
/// unless a verified signature vouches for it (the signature binds it).
pub const HOPS: HeaderName = HeaderName::from_static("x-cell-hops");

/// How many context fields travel in headers (see [`HeaderNames::field`]).
pub(crate) const FIELDS: usize = 11;

/// The fixed names as statics, so that [`HeaderNames::field`] can lend them.
static TRACEPARENT_NAME: HeaderName = TRACEPARENT;
static TRACESTATE_NAME: HeaderName = TRACESTATE;
static BAGGAGE_NAME: HeaderName = BAGGAGE;

/// The header names the context travels in. The W3C trace headers
/// (`traceparent`, `tracestate`, `baggage`) have fixed names.
///
/// | field | default | value |
/// |---|---|---|
/// | `cell` | `X-Cell-ID` | a [`CellId`](crate::CellId) |
/// | `request_id` | `X-Request-ID` | a token |
/// | `tenant` | `X-Tenant-ID` | a token |
/// | `auth_user` | `X-Auth-User` | a token |
/// | `routing_key` | `X-User-ID` | a token |
/// | `region_hint` | `X-Region-Hint` | `<region>;src=<gps\|phone\|ip>` |
/// | `downgraded` | `X-Downgraded` | `true` / `false` (also `1` / `0`) |
/// | `xid` | `X-Xid` | a token |
/// | `signature` | `X-Cell-Sig` | `v2;iat=<unix seconds>;exp=<unix seconds>;sig=<base64url HMAC-SHA256>` |
///
/// A token is 1 to 128 visible ASCII bytes without `,` or `;`.
///
/// ```
/// use cellctx::HeaderNames;
/// use http::HeaderName;
///
/// let names = HeaderNames::default().with_tenant(HeaderName::from_static("x-org-id"));
/// assert_eq!(names.tenant.as_str(), "x-org-id");
/// assert_eq!(names.cell.as_str(), "x-cell-id");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeaderNames {
    /// The cell (`X-Cell-ID`).
    pub cell: HeaderName,
    /// The request id (`X-Request-ID`).
    pub request_id: HeaderName,
    /// The tenant (`X-Tenant-ID`).
    pub tenant: HeaderName,
    /// The authenticated user (`X-Auth-User`).
    pub auth_user: HeaderName,
    /// The routing key, the user id (`X-User-ID`).
    pub routing_key: HeaderName,
    /// The region hint (`X-Region-Hint`).
    pub region_hint: HeaderName,
    /// The downgraded flag (`X-Downgraded`).
    pub downgraded: HeaderName,
    /// The saga transaction id (`X-Xid`).
    pub xid: HeaderName,
    /// The HMAC signature of the context (`X-Cell-Sig`).
    pub signature: HeaderName,
}

impl Default for HeaderNames {
    fn default() -> Self {
        HeaderNames {
            cell: HeaderName::from_static("x-cell-id"),
            request_id: HeaderName::from_static("x-request-id"),
            tenant: HeaderName::from_static("x-tenant-id"),
            auth_user: HeaderName::from_static("x-auth-user"),
            routing_key: HeaderName::from_static("x-user-id"),
            region_hint: HeaderName::from_static("x-region-hint"),
            downgraded: HeaderName::from_static("x-downgraded"),
            xid: HeaderName::from_static("x-xid"),
            signature: HeaderName::from_static("x-cell-sig"),
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta] $fn:ident => $field:ident,)*) => {
        $(
            #[$doc]
            pub fn $fn(mut self, name: HeaderName) -> Self {
                self.$field = name;
                self
            }
        )*
    };
}

impl HeaderNames {
    /// The default names (same as [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    setter! {
        /// Sets the cell header.
        with_cell => cell,
        /// Sets the request id header.
        with_request_id => request_id,
        /// Sets the tenant header.
        with_tenant => tenant,
        /// Sets the authenticated user header.
        with_auth_user => auth_user,
        /// Sets the routing key header.
        with_routing_key => routing_key,
        /// Sets the region hint header.
        with_region_hint => region_hint,
        /// Sets the downgraded flag header.
        with_downgraded => downgraded,
        /// Sets the saga transaction id header.
        with_xid => xid,
        /// Sets the signature header.
        with_signature => signature,
    }

    /// Whether no two fields (the W3C trace headers included) share a name.
    pub(crate) fn all_distinct(&self) -> bool {
        (0..FIELDS).all(|i| (i + 1..FIELDS).all(|j| self.field(i) != self.field(j)))
    }

    /// The header of field `i` in the context's field order, the order of the
    /// extraction's scan and of what injection writes: cell 0, request id 1,
    /// tenant 2, authenticated user 3, routing key 4, xid 5, region hint 6,
    /// downgraded 7, `traceparent` 8, `tracestate` 9, `baggage` 10 (and past it).
    #[inline]
    pub(crate) fn field(&self, i: usize) -> &HeaderName {
        match i {
            0 => &self.cell,
            1 => &self.request_id,
            2 => &self.tenant,
            3 => &self.auth_user,
            4 => &self.routing_key,
            5 => &self.xid,
            6 => &self.region_hint,
            7 => &self.downgraded,
            8 => &TRACEPARENT_NAME,
            9 => &TRACESTATE_NAME,
            _ => &BAGGAGE_NAME,
        }
    }

    /// The internal headers: the ones an edge strips from unsigned requests
    /// (cell, tenant, authenticated user, xid, downgraded).
    pub fn internal(&self) -> [&HeaderName; 5] {
        [&self.cell, &self.tenant, &self.auth_user, &self.xid, &self.downgraded]
    }
}

/// The conventional spelling of a header name for humans (problem bodies):
/// the default names get their usual capitals (`X-Cell-ID`), others stay as they are.
pub(crate) fn display_name(name: &HeaderName) -> Cow<'static, str> {
    let known = match name.as_str() {
        "x-cell-id" => "X-Cell-ID",
        "x-request-id" => "X-Request-ID",
        "x-tenant-id" => "X-Tenant-ID",
        "x-auth-user" => "X-Auth-User",
        "x-user-id" => "X-User-ID",
        "x-region-hint" => "X-Region-Hint",
        "x-downgraded" => "X-Downgraded",
        "x-xid" => "X-Xid",
        "x-cell-sig" => "X-Cell-Sig",
        other => return Cow::Owned(other.to_owned()),
    };
    Cow::Borrowed(known)
}
