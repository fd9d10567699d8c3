//! HMAC-SHA256 signatures over the canonical context and the request: how an
//! edge tells a context a trusted service set from one a client made up.
//!
//! The signature header (`X-Cell-Sig`) reads
//! `v2;iat=<unix seconds>;exp=<unix seconds>;sig=<mac>`, `mac` being the
//! unpadded base64url HMAC-SHA256, under a shared key, of the canonical
//! serialisation:
//!
//! ```text
//! cellctx-sig-v2\n<iat>\n<exp>\n
//! method <v>\n target <v>\n request_id <v>\n hops <v>\n
//! cell <v>\n tenant <v>\n auth_user <v>\n routing_key <v>\n region_hint <v>\n downgraded <0|1>\n xid <v>\n
//! ```
//!
//! (no spaces before the names; each `<v>` is `+value` when present, `-` when
//! absent; `target` is the path and query, `hops` the `X-Cell-Hops` value). So
//! a signature is bound to one method, path, query and request id: moved to
//! another request it does not verify, and presented twice it is a replay
//! ([`HopVerifier`](crate::HopVerifier)). The W3C trace headers and baggage are
//! not signed: they are not authority, and the trace moves on at every hop.
//!
//! The older `v1;exp=<unix seconds>;sig=<mac>` form (over
//! `cellctx-sig-v1\n<exp>\n` and the context fields only) is bound to no
//! request; verifiers refuse it unless told to accept it during a rollout
//! ([`HopVerifier::with_accept_unbound_v1`](crate::HopVerifier::with_accept_unbound_v1)).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue};
use sha2::Sha256;

use crate::context::CellContext;
use crate::error::ContextError;
pub(crate) use crate::hop::RequestBinding;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Shortest accepted signing key, in bytes.
pub const MIN_KEY_LEN: usize = 16;

pub(crate) const SIG_LEN: usize = 32;
pub(crate) const DEFAULT_SIG_HEADER: HeaderName = HeaderName::from_static("x-cell-sig");

/// A secret HMAC-SHA256 key (at least 16 bytes). Its `Debug` output hides it.
#[derive(Clone)]
pub struct SigningKey {
    mac: HmacSha256,
}

impl SigningKey {
    /// A key from its secret bytes; shorter than [`MIN_KEY_LEN`] is an error.
    pub fn try_new(secret: impl AsRef<[u8]>) -> Result<Self, ContextError> {
        let secret = secret.as_ref();
        if secret.len() < MIN_KEY_LEN {
            return Err(ContextError::InvalidKey("shorter than 16 bytes"));
        }
        let mac = HmacSha256::new_from_slice(secret).map_err(|_| ContextError::InvalidKey("rejected by HMAC"))?;
        Ok(SigningKey { mac })
    }

    pub(crate) fn mac_v1(&self, ctx: &CellContext, expires_at: u64) -> HmacSha256 {
        let mut mac = self.mac.clone();
        canonical(ctx, expires_at, &mut mac);
        mac
    }

    pub(crate) fn mac_v2(&self, ctx: &CellContext, req: &RequestBinding<'_>, issued_at: u64, expires_at: u64) -> HmacSha256 {
        let mut mac = self.mac.clone();
        canonical_v2(ctx, req, issued_at, expires_at, &mut mac);
        mac
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// The keys an edge accepts signatures under: the current one and, during a
/// rotation, the previous one.
///
/// Rotation: deploy `SigningKeys { current: new, previous: Some(old) }` to the
/// verifiers, then switch the signers to `new`, then drop `previous`.
#[derive(Clone, Debug)]
pub struct SigningKeys {
    /// The key signers use now.
    pub current: SigningKey,
    /// The key signers used before the rotation, still accepted.
    pub previous: Option<SigningKey>,
}

impl SigningKeys {
    /// Only `current` accepted.
    pub fn new(current: SigningKey) -> Self {
        SigningKeys { current, previous: None }
    }

    /// Also accepts `previous`.
    pub fn with_previous(mut self, previous: SigningKey) -> Self {
        self.previous = Some(previous);
        self
    }

    /// Checks a legacy, unbound `v1` signature header value `sig` against `ctx`
    /// at time `now` (no replay or lifetime check: see [`HopVerifier`](crate::HopVerifier)
    /// for the `v2` form the server layer checks).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use cellctx::{CellContext, CellId, Signer, SigningKey, SigningKeys};
    ///
    /// let key = SigningKey::try_new(b"0123456789abcdef0123456789abcdef").unwrap();
    /// let ctx = CellContext::new().with_cell(CellId::new("eu-1").unwrap());
    /// let now = SystemTime::now();
    /// let sig = Signer::new(key.clone()).sign_unbound_v1(&ctx, now + Duration::from_secs(60));
    /// let keys = SigningKeys::new(key);
    /// assert!(keys.verify(&ctx, sig.as_bytes(), now).is_ok());
    /// assert!(keys.verify(&ctx, sig.as_bytes(), now + Duration::from_secs(61)).is_err());
    /// ```
    pub fn verify(&self, ctx: &CellContext, sig: &[u8], now: SystemTime) -> Result<(), ContextError> {
        self.verify_named(ctx, sig, now, &DEFAULT_SIG_HEADER)
    }

    pub(crate) fn verify_named(
        &self,
        ctx: &CellContext,
        sig: &[u8],
        now: SystemTime,
        header: &HeaderName,
    ) -> Result<(), ContextError> {
        let (expires_at, mac) = parse(sig).ok_or_else(|| ContextError::SignatureMalformed { header: header.clone() })?;
        let matches = |key: &SigningKey| key.mac_v1(ctx, expires_at).verify_slice(&mac).is_ok();
        if !self.any_matches(matches) {
            return Err(ContextError::SignatureMismatch { header: header.clone() });
        }
        if expires_at <= unix_secs(now) {
            return Err(ContextError::SignatureExpired { header: header.clone(), expired_at: expires_at });
        }
        Ok(())
    }

    /// Whether `matches` holds for the current or the previous key.
    pub(crate) fn any_matches(&self, matches: impl Fn(&SigningKey) -> bool) -> bool {
        matches(&self.current) || self.previous.as_ref().is_some_and(matches)
    }
}

/// Default lifetime of a signature a [`Signer`] makes: 30 seconds.
pub const DEFAULT_SIGNATURE_LIFETIME: Duration = Duration::from_secs(30);

/// Signs the requests a service sends to an edge (or to anything in `Edge` mode),
/// binding the context to the request's method, path, query, request id and hop count.
///
/// ```
/// use std::time::SystemTime;
/// use cellctx::{CellContext, CellId, Signer, SigningKey};
///
/// let signer = Signer::new(SigningKey::try_new([7u8; 32]).unwrap());
/// let ctx = CellContext::new().with_cell(CellId::new("eu-1").unwrap()).with_tenant("acme").unwrap();
/// let req = http::Request::get("/orders?page=2").body(()).unwrap();
/// let sig = signer.sign(&ctx, &req, SystemTime::now());
/// assert!(sig.to_str().unwrap().starts_with("v2;iat="));
/// ```
#[derive(Clone, Debug)]
pub struct Signer {
    key: SigningKey,
    lifetime: Duration,
    hops: HeaderName,
}

impl Signer {
    /// Signs with `key`; signatures live [`DEFAULT_SIGNATURE_LIFETIME`].
    pub fn new(key: SigningKey) -> Self {
        Signer { key, lifetime: DEFAULT_SIGNATURE_LIFETIME, hops: crate::headers::HOPS.clone() }
    }

    /// Signatures live this long (whole seconds, at least one); a verifier refuses
    /// lifetimes above its own maximum.
    pub fn with_lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime.max(Duration::from_secs(1));
        self
    }

    /// Binds the hop count read from this header instead of `X-Cell-Hops`.
    pub fn with_hops_header(mut self, name: HeaderName) -> Self {
        self.hops = name;
        self
    }

    /// The `X-Cell-Sig` value for `ctx` sent with `req`, issued at `now`.
    pub fn sign<B>(&self, ctx: &CellContext, req: &http::Request<B>, now: SystemTime) -> HeaderValue {
        self.sign_parts(ctx, req.method(), req.uri(), req.headers(), now)
    }

    /// The `X-Cell-Sig` value for `ctx` sent with a request made of these parts, issued at `now`.
    pub fn sign_parts(
        &self,
        ctx: &CellContext,
        method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        now: SystemTime,
    ) -> HeaderValue {
        let binding = RequestBinding::new(method, uri, headers.get(&self.hops).map(HeaderValue::as_bytes));
        let iat = unix_secs(now);
        let exp = iat.saturating_add(self.lifetime.as_secs().max(1));
        let tag = self.key.mac_v2(ctx, &binding, iat, exp).finalize().into_bytes();
        let value = format!("v2;iat={iat};exp={exp};sig={}", URL_SAFE_NO_PAD.encode(tag));
        // Digits and the base64url alphabet only: always a valid header value.
        HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("v2;invalid"))
    }

    /// A legacy `v1` value for `ctx`, bound to no request, valid until
    /// `expires_at`: for peers still on `v1` during a rollout only (verifiers
    /// refuse it unless they opt in).
    pub fn sign_unbound_v1(&self, ctx: &CellContext, expires_at: SystemTime) -> HeaderValue {
        let exp = unix_secs(expires_at);
        let tag = self.key.mac_v1(ctx, exp).finalize().into_bytes();
        let value = format!("v1;exp={exp};sig={}", URL_SAFE_NO_PAD.encode(tag));
        // Digits and the base64url alphabet only: always a valid header value.
        HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("v1;invalid"))
    }
}

pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) fn parse(sig: &[u8]) -> Option<(u64, [u8; SIG_LEN])> {
    let rest = sig.strip_prefix(b"v1;exp=")?;
    let split = rest.iter().position(|&b| b == b';')?;
    let (exp, tail) = rest.split_at(split);
    let b64 = tail.strip_prefix(b";sig=")?;
    if exp.is_empty() || exp.len() > 20 || !exp.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let exp = std::str::from_utf8(exp).ok()?.parse::<u64>().ok()?;
    if b64.len() != 43 {
        return None;
    }
    let mut mac = [0u8; SIG_LEN];
    let n = URL_SAFE_NO_PAD.decode_slice(b64, &mut mac).ok()?;
    (n == SIG_LEN).then_some((exp, mac))
}

fn field(mac: &mut HmacSha256, name: &[u8], value: Option<&[u8]>) {
    mac.update(name);
    match value {
        Some(v) => {
            mac.update(b" +");
            mac.update(v);
        }
        None => mac.update(b" -"),
    }
    mac.update(b"\n");
}

fn canonical(ctx: &CellContext, expires_at: u64, mac: &mut HmacSha256) {
    mac.update(b"cellctx-sig-v1\n");
    let mut digits = [0u8; 20];
    mac.update(decimal(expires_at, &mut digits));
    mac.update(b"\n");
    context_fields(ctx, mac);
}

fn canonical_v2(ctx: &CellContext, req: &RequestBinding<'_>, issued_at: u64, expires_at: u64, mac: &mut HmacSha256) {
    mac.update(b"cellctx-sig-v2\n");
    let mut digits = [0u8; 20];
    mac.update(decimal(issued_at, &mut digits));
    mac.update(b"\n");
    mac.update(decimal(expires_at, &mut digits));
    mac.update(b"\n");
    field(mac, b"method", Some(req.method.as_str().as_bytes()));
    field(mac, b"target", Some(req.target.as_bytes()));
    field(mac, b"request_id", Some(ctx.request_id.as_bytes()));
    field(mac, b"hops", req.hops);
    context_fields(ctx, mac);
}

fn context_fields(ctx: &CellContext, mac: &mut HmacSha256) {
    let field = |mac: &mut HmacSha256, name: &[u8], value: Option<&str>| field(mac, name, value.map(str::as_bytes));
    field(mac, b"cell", ctx.cell().map(|c| c.as_str()));
    field(mac, b"tenant", ctx.tenant.as_deref());
    field(mac, b"auth_user", ctx.auth_user.as_deref());
    field(mac, b"routing_key", ctx.routing_key.as_deref());
    match &ctx.region_hint {
        Some(h) => {
            mac.update(b"region_hint +");
            mac.update(h.region.as_str().as_bytes());
            mac.update(b";src=");
            mac.update(h.source.as_str().as_bytes());
            mac.update(b"\n");
        }
        None => field(mac, b"region_hint", None),
    }
    field(mac, b"downgraded", Some(if ctx.downgraded { "1" } else { "0" }));
    field(mac, b"xid", ctx.xid.as_deref());
}

fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;
    use crate::CellId;

    fn key(b: u8) -> SigningKey {
        SigningKey::try_new([b; 32]).unwrap()
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(SigningKey::try_new(b"short").unwrap_err(), ContextError::InvalidKey("shorter than 16 bytes"));
    }

    #[test]
    fn decimal_writes_digits() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(1732550000, &mut b), b"1732550000");
        assert_eq!(decimal(u64::MAX, &mut b), u64::MAX.to_string().as_bytes());
    }

    #[test]
    fn every_signed_field_is_covered() {
        let now = SystemTime::now();
        let ctx = CellContext::new()
            .with_cell(CellId::new("eu-1").unwrap())
            .with_tenant("acme")
            .unwrap()
            .with_auth_user("alice")
            .unwrap()
            .with_routing_key("u1")
            .unwrap()
            .with_xid("x1")
            .unwrap();
        let sig = Signer::new(key(1)).sign_unbound_v1(&ctx, now + Duration::from_secs(60));
        let keys = SigningKeys::new(key(1));
        keys.verify(&ctx, sig.as_bytes(), now).unwrap();
        let mutations: [fn(&mut CellContext); 6] = [
            |c| c.set_cell(Some(CellId::new("eu-2").unwrap())),
            |c| c.tenant = None,
            |c| c.auth_user = Some("mallory".parse().unwrap()),
            |c| c.routing_key = Some("u2".parse().unwrap()),
            |c| c.downgraded = true,
            |c| c.xid = None,
        ];
        for m in mutations {
            let mut c = ctx.clone();
            m(&mut c);
            assert!(matches!(keys.verify(&c, sig.as_bytes(), now), Err(ContextError::SignatureMismatch { .. })));
        }
        // The request id is not signed.
        let mut c = ctx.clone();
        c.request_id = "other".parse().unwrap();
        keys.verify(&c, sig.as_bytes(), now).unwrap();
    }

    #[test]
    fn malformed_signatures() {
        let keys = SigningKeys::new(key(1));
        let ctx = CellContext::new();
        for bad in ["", "v1", "v1;exp=;sig=", "v2;exp=1;sig=abc", "v1;exp=12x;sig=AAAA", "v1;exp=99999999999;sig=short"] {
            assert!(
                matches!(keys.verify(&ctx, bad.as_bytes(), SystemTime::now()), Err(ContextError::SignatureMalformed { .. })),
                "{bad}"
            );
        }
    }
}
