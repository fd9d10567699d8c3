//! [`JwtAuthenticator`]: bearer JWTs verified against a [`JwksStore`].

use std::fmt;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::keys::{ALGORITHMS, JwksStore};
use crate::auth::{Authenticator, Identity, RequestHead, bearer_token};
use crate::cell_id::CellId;
use crate::error::{AuthFailure, ContextError};

/// Default leeway on `exp` and `nbf`: 60 seconds (Envoy's `clock_skew_seconds`).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// Verifies `Authorization: Bearer <jwt>` and maps its claims to an identity.
///
/// Claims read (names configurable): the user from `sub` (required, a
/// token), the tenant from `tenant`, the registered home region from
/// `home_region` (a region name like a cell id), compliance pinning from
/// `region_pinned` (a boolean). A claim present but of the wrong form is a
/// refusal ([`AuthFailure::BadClaim`]), never ignored.
///
/// ```
/// use cellctx::auth::jwt::{JwksStore, JwtAuthenticator};
///
/// let auth = JwtAuthenticator::try_new(JwksStore::empty(), ["orders-api"])
///     .unwrap()
///     .with_issuer("https://idp.example")
///     .with_tenant_claim("org");
/// assert!(JwtAuthenticator::try_new(JwksStore::empty(), Vec::<String>::new()).is_err());
/// # let _ = auth;
/// ```
#[derive(Clone)]
pub struct JwtAuthenticator {
    keys: JwksStore,
    audiences: Vec<String>,
    issuers: Vec<String>,
    leeway: Duration,
    user_claim: String,
    tenant_claim: String,
    home_region_claim: String,
    pinned_claim: String,
    /// One validation per accepted algorithm, built when the config changes.
    validations: Vec<(Algorithm, Validation)>,
}

impl JwtAuthenticator {
    /// Verifies tokens under the keys of `keys` whose `aud` holds one of
    /// `audiences` (at least one: a token for another service must not pass).
    pub fn try_new<A: Into<String>>(keys: JwksStore, audiences: impl IntoIterator<Item = A>) -> Result<Self, ContextError> {
        let audiences: Vec<String> = audiences.into_iter().map(Into::into).collect();
        if audiences.is_empty() || audiences.iter().any(String::is_empty) {
            return Err(ContextError::InvalidAuthConfig("JWT: at least one non-empty audience is required".into()));
        }
        let mut auth = JwtAuthenticator {
            keys,
            audiences,
            issuers: Vec::new(),
            leeway: DEFAULT_LEEWAY,
            user_claim: "sub".into(),
            tenant_claim: "tenant".into(),
            home_region_claim: "home_region".into(),
            pinned_claim: "region_pinned".into(),
            validations: Vec::new(),
        };
        auth.rebuild();
        Ok(auth)
    }

    /// Also requires `iss` to be one of the issuers given this way.
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self.rebuild();
        self
    }

    /// The leeway on `exp` and `nbf` (whole seconds; default [`DEFAULT_LEEWAY`]).
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self.rebuild();
        self
    }

    /// Reads the user from this claim instead of `sub`.
    pub fn with_user_claim(mut self, name: impl Into<String>) -> Self {
        self.user_claim = name.into();
        self
    }

    /// Reads the tenant from this claim instead of `tenant`.
    pub fn with_tenant_claim(mut self, name: impl Into<String>) -> Self {
        self.tenant_claim = name.into();
        self
    }

    /// Reads the home region from this claim instead of `home_region`.
    pub fn with_home_region_claim(mut self, name: impl Into<String>) -> Self {
        self.home_region_claim = name.into();
        self
    }

    /// Reads compliance pinning from this claim instead of `region_pinned`.
    pub fn with_region_pinned_claim(mut self, name: impl Into<String>) -> Self {
        self.pinned_claim = name.into();
        self
    }

    /// The key store (refresh it, or look at its `kid`s).
    pub fn keys(&self) -> &JwksStore {
        &self.keys
    }

    fn rebuild(&mut self) {
        self.validations = ALGORITHMS
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.leeway = self.leeway.as_secs();
                v.validate_exp = true;
                v.validate_nbf = true;
                v.set_audience(&self.audiences);
                let mut required = vec!["exp", "aud"];
                if !self.issuers.is_empty() {
                    v.set_issuer(&self.issuers);
                    required.push("iss");
                }
                v.set_required_spec_claims(&required);
                (alg, v)
            })
            .collect();
    }

    fn verify(&self, token: &str) -> Result<Identity, AuthFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::Malformed)?;
        let kid = header.kid.ok_or(AuthFailure::UnknownKey)?;
        let keys = self.keys.load();
        let key = keys.by_kid.get(&kid).ok_or(AuthFailure::UnknownKey)?;
        if header.alg != key.alg {
            return Err(AuthFailure::BadSignature);
        }
        let validation = self.validations.iter().find(|(a, _)| *a == key.alg).map(|(_, v)| v).ok_or(AuthFailure::BadSignature)?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation).map_err(|e| failure(e.kind()))?;
        self.identity(&data.claims)
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, AuthFailure> {
        let text = |name: &str, label: &'static str| match claims.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(AuthFailure::BadClaim(label)),
        };
        let user = text(&self.user_claim, "user")?.ok_or(AuthFailure::BadClaim("user"))?;
        let mut id = Identity::try_new(user).map_err(|_| AuthFailure::BadClaim("user"))?;
        if let Some(t) = text(&self.tenant_claim, "tenant")? {
            id = id.with_tenant(t).map_err(|_| AuthFailure::BadClaim("tenant"))?;
        }
        if let Some(r) = text(&self.home_region_claim, "home_region")? {
            id = id.with_home_region(CellId::new(r).map_err(|_| AuthFailure::BadClaim("home_region"))?);
        }
        match claims.get(&self.pinned_claim) {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => id = id.with_region_pinned(*b),
            Some(_) => return Err(AuthFailure::BadClaim("region_pinned")),
        }
        Ok(id)
    }
}

fn failure(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidAudience => AuthFailure::WrongAudience,
        ErrorKind::InvalidIssuer => AuthFailure::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthFailure::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthFailure::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) if c == "exp" => AuthFailure::BadClaim("exp"),
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => AuthFailure::BadSignature,
        _ => AuthFailure::Malformed,
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate(&self, head: &RequestHead<'_>) -> Result<Option<crate::auth::Identity>, AuthFailure> {
        match bearer_token(head.headers)? {
            None => Ok(None),
            Some(token) => self.verify(token).map(Some),
        }
    }
}

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("keys", &self.keys)
            .field("audiences", &self.audiences)
            .field("issuers", &self.issuers)
            .field("leeway", &self.leeway)
            .finish_non_exhaustive()
    }
}
