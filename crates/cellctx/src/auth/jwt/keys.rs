//! [`JwksStore`]: the verification keys by `kid`, swapped whole on refresh.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::error::ContextError;

/// Algorithms accepted: RS256, ES256 and EdDSA (Ed25519).
pub const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// One usable key: its decoding key and the one algorithm it verifies.
pub(crate) struct Key {
    pub(crate) key: DecodingKey,
    pub(crate) alg: Algorithm,
}

/// Keys by `kid`.
#[derive(Default)]
pub(crate) struct KeySet {
    pub(crate) by_kid: HashMap<String, Key>,
}

impl KeySet {
    /// The usable keys of `set`: signature keys with a `kid`, of an accepted
    /// algorithm (the JWK's `alg`, or RS256/ES256/EdDSA from its type and
    /// curve); other keys are skipped with a `warn` log line.
    fn from_jwks(set: &JwkSet) -> Self {
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            match usable(jwk) {
                Ok((kid, key)) => {
                    by_kid.insert(kid, key);
                }
                Err(why) => tracing::warn!(kid = ?jwk.common.key_id, why, "cellctx: skipping JWKS key"),
            }
        }
        KeySet { by_kid }
    }
}

fn usable(jwk: &Jwk) -> Result<(String, Key), &'static str> {
    let kid = jwk.common.key_id.clone().ok_or("no kid")?;
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))) {
        return Err("not a signature key");
    }
    let alg = match (jwk.common.key_algorithm, &jwk.algorithm) {
        (Some(a), _) => Algorithm::try_from(a).map_err(|_| "unsupported alg")?,
        (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (None, AlgorithmParameters::EllipticCurve(p)) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        (None, AlgorithmParameters::OctetKeyPair(p)) if p.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
        (None, _) => return Err("unsupported key type"),
    };
    if !ALGORITHMS.contains(&alg) {
        return Err("algorithm not accepted (RS256, ES256, EdDSA)");
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "unusable key material")?;
    Ok((kid, Key { key, alg }))
}

/// The verification keys, read by every request without a lock and replaced
/// whole when the key set is refreshed (key rotation by `kid`: a new `kid` is
/// accepted from the refresh that brings it, a removed one refused from the
/// refresh that drops it). Clones share the keys.
///
/// ```
/// use cellctx::auth::jwt::JwksStore;
///
/// let store = JwksStore::from_json(r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1",
///     "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#).unwrap();
/// assert_eq!(store.kids(), vec!["k1".to_owned()]);
/// ```
#[derive(Clone)]
pub struct JwksStore {
    keys: Arc<ArcSwap<KeySet>>,
}

impl JwksStore {
    /// An empty store (every token refused until a refresh fills it).
    pub fn empty() -> Self {
        JwksStore { keys: Arc::new(ArcSwap::from_pointee(KeySet::default())) }
    }

    /// A store holding the usable keys of `set`.
    pub fn from_set(set: &JwkSet) -> Self {
        JwksStore { keys: Arc::new(ArcSwap::from_pointee(KeySet::from_jwks(set))) }
    }

    /// A store holding the usable keys of a JWKS document.
    pub fn from_json(json: &str) -> Result<Self, ContextError> {
        Ok(Self::from_set(&parse_jwks(json.as_bytes())?))
    }

    /// Replaces the keys with the usable keys of `set`.
    pub fn replace(&self, set: &JwkSet) {
        self.keys.store(Arc::new(KeySet::from_jwks(set)));
    }

    /// The `kid`s held, sorted.
    pub fn kids(&self) -> Vec<String> {
        let mut kids: Vec<String> = self.keys.load().by_kid.keys().cloned().collect();
        kids.sort();
        kids
    }

    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.keys.load()
    }
}

impl fmt::Debug for JwksStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwksStore").field("kids", &self.kids()).finish()
    }
}

/// A JWKS document's key set.
pub(crate) fn parse_jwks(bytes: &[u8]) -> Result<JwkSet, ContextError> {
    serde_json::from_slice(bytes).map_err(|e| ContextError::InvalidAuthConfig(format!("JWKS: {e}")))
}
