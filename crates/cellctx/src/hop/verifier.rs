//! [`HopVerifier`]: the edge's policy for signed hops.

use std::sync::Arc;
use std::time::Duration;

use hmac::Mac as _;
use http::HeaderName;

use super::RequestBinding;
use super::replay::{Refusal, ReplayCache};
use super::wire::{Parsed, parse_any};
use crate::clock::{Clock, SystemClock};
use crate::context::CellContext;
use crate::error::ContextError;
use crate::sign::{SigningKey, SigningKeys, unix_secs};

/// Default longest accepted signature lifetime (`exp - iat`): 30 seconds.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(30);
/// Default clock-skew allowance between signer and verifier: 5 seconds.
pub const DEFAULT_SKEW: Duration = Duration::from_secs(5);
/// Default number of signatures the replay cache remembers: 100,000.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// How an edge checks `X-Cell-Sig`: the keys, the longest lifetime it accepts,
/// the clock skew it allows, and a replay cache shared by every clone (so by
/// every service a [`CellContextLayer`](crate::CellContextLayer) makes).
///
/// A `v2` signature is accepted when, in this order:
/// 1. it parses, and its MAC matches the context and the request (method, path
///    and query, request id, hop count) under the current or previous key;
/// 2. it was issued no later than now plus the skew;
/// 3. its lifetime `exp - iat` is positive and at most the maximum;
/// 4. now is before `exp` plus the skew;
/// 5. its MAC was not seen before within that window. Each accepted MAC is
///    remembered until `exp` plus the skew; when the cache holds `capacity`
///    live entries a new signature is **refused** (`replay-cache-full`), not
///    let through unremembered: size the capacity above your signed-request
///    rate times the maximum lifetime. The cache lives in this process: a
///    signature replayed to another edge replica within its lifetime is not
///    caught there, which is why lifetimes are short (at most the maximum).
///
/// A legacy `v1` signature is refused (`signature-unbound`) unless
/// [`with_accept_unbound_v1`](HopVerifier::with_accept_unbound_v1) is on; then
/// it is checked as before (key and expiry only, no replay check).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use cellctx::{CellContext, HopVerifier, Signer, SigningKey, SigningKeys};
///
/// let key = SigningKey::try_new([9u8; 32]).unwrap();
/// let verifier = HopVerifier::new(SigningKeys::new(key.clone()));
/// let ctx = CellContext::new().with_tenant("acme").unwrap();
/// let req = http::Request::post("/orders").body(()).unwrap();
/// let sig = Signer::new(key).sign(&ctx, &req, SystemTime::now());
/// assert!(verifier.verify(&ctx, &req, sig.as_bytes()).is_ok());
/// assert!(verifier.verify(&ctx, &req, sig.as_bytes()).is_err(), "a replay");
/// let other = http::Request::post("/admin").body(()).unwrap();
/// assert!(verifier.verify(&ctx, &other, sig.as_bytes()).is_err(), "another path");
/// ```
#[derive(Clone, Debug)]
pub struct HopVerifier {
    keys: SigningKeys,
    max_lifetime: u64,
    skew: u64,
    accept_v1: bool,
    replay_capacity: usize,
    replay: Arc<ReplayCache>,
    clock: Arc<dyn Clock>,
    hops: HeaderName,
}

impl HopVerifier {
    /// Accepts `v2` signatures under `keys`, with the default lifetime, skew and
    /// replay capacity, on the system clock.
    pub fn new(keys: SigningKeys) -> Self {
        HopVerifier {
            keys,
            max_lifetime: DEFAULT_MAX_LIFETIME.as_secs(),
            skew: DEFAULT_SKEW.as_secs(),
            accept_v1: false,
            replay_capacity: DEFAULT_REPLAY_CAPACITY,
            replay: Arc::new(ReplayCache::new(DEFAULT_REPLAY_CAPACITY)),
            clock: Arc::new(SystemClock),
            hops: crate::headers::HOPS.clone(),
        }
    }

    /// The longest lifetime accepted (whole seconds; below one second counts as one).
    pub fn with_max_lifetime(mut self, max: Duration) -> Self {
        self.max_lifetime = max.as_secs().max(1);
        self
    }

    /// The clock skew allowed on both the issue and the expiry time (whole seconds).
    pub fn with_clock_skew(mut self, skew: Duration) -> Self {
        self.skew = skew.as_secs();
        self
    }

    /// How many live signatures the replay cache remembers (a fresh, empty cache).
    pub fn with_replay_capacity(mut self, capacity: usize) -> Self {
        self.replay_capacity = capacity.max(1);
        self.replay = Arc::new(ReplayCache::new(self.replay_capacity));
        self
    }

    /// Also accepts legacy `v1` signatures (bound to no request, not replay
    /// checked): only while signers are being moved to `v2`, then turn it off.
    pub fn with_accept_unbound_v1(mut self, accept: bool) -> Self {
        self.accept_v1 = accept;
        self
    }

    /// Reads the time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Reads the hop count bound by the signature from this header instead of `X-Cell-Hops`.
    pub fn with_hops_header(mut self, name: HeaderName) -> Self {
        self.hops = name;
        self
    }

    /// The keys.
    pub fn keys(&self) -> &SigningKeys {
        &self.keys
    }

    /// Checks the signature value `sig` against `ctx` and the request `req`,
    /// recording it in the replay cache when it is accepted.
    pub fn verify<B>(&self, ctx: &CellContext, req: &http::Request<B>, sig: &[u8]) -> Result<(), ContextError> {
        let binding =
            RequestBinding::new(req.method(), req.uri(), req.headers().get(&self.hops).map(http::HeaderValue::as_bytes));
        self.verify_bound(ctx, &binding, sig, &crate::sign::DEFAULT_SIG_HEADER)
    }

    /// The hop-count header the signature binds.
    pub(crate) fn hops_header(&self) -> &HeaderName {
        &self.hops
    }

    pub(crate) fn verify_bound(
        &self,
        ctx: &CellContext,
        req: &RequestBinding<'_>,
        sig: &[u8],
        header: &HeaderName,
    ) -> Result<(), ContextError> {
        let now_time = self.clock.now();
        let (issued_at, expires_at, mac) = match parse_any(sig) {
            None => return Err(ContextError::SignatureMalformed { header: header.clone() }),
            Some(Parsed::V1 { .. }) if !self.accept_v1 => {
                return Err(ContextError::SignatureUnbound { header: header.clone() });
            }
            Some(Parsed::V1 { .. }) => return self.keys.verify_named(ctx, sig, now_time, header),
            Some(Parsed::V2 { issued_at, expires_at, mac }) => (issued_at, expires_at, mac),
        };
        let matches = |key: &SigningKey| key.mac_v2(ctx, req, issued_at, expires_at).verify_slice(&mac).is_ok();
        if !self.keys.any_matches(matches) {
            return Err(ContextError::SignatureMismatch { header: header.clone() });
        }
        let now = unix_secs(now_time);
        if issued_at > now.saturating_add(self.skew) {
            return Err(ContextError::SignatureNotYetValid { header: header.clone() });
        }
        if expires_at <= issued_at {
            return Err(ContextError::SignatureMalformed { header: header.clone() });
        }
        let lifetime = expires_at - issued_at;
        if lifetime > self.max_lifetime {
            return Err(ContextError::SignatureTooLong { header: header.clone(), lifetime_secs: lifetime });
        }
        let until = expires_at.saturating_add(self.skew);
        if now >= until {
            return Err(ContextError::SignatureExpired { header: header.clone(), expired_at: expires_at });
        }
        self.replay.record(&mac, until, now).map_err(|refusal| match refusal {
            Refusal::Replayed => ContextError::SignatureReplayed { header: header.clone() },
            Refusal::Full => ContextError::ReplayCacheFull { header: header.clone() },
        })
    }
}
