//! Token issuers with fixed keys.

use std::time::{SystemTime, UNIX_EPOCH};

use cellctx::auth::jwt::JwkSet;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// Signs tokens under one key, named by `kid`.
pub struct Issuer {
    pub kid: String,
    pub alg: Algorithm,
    key: EncodingKey,
}

impl Issuer {
    /// An Ed25519 key from a fixed seed.
    pub fn ed25519(kid: &str, seed: u8) -> Self {
        // PKCS#8 v1 wrapping of a 32-byte Ed25519 seed.
        let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&[seed; 32]);
        Issuer { kid: kid.into(), alg: Algorithm::EdDSA, key: EncodingKey::from_ed_der(&der) }
    }

    /// The fixture RSA key (RS256).
    pub fn rsa(kid: &str) -> Self {
        let der = include_bytes!("../fixtures/rsa_private.der");
        Issuer { kid: kid.into(), alg: Algorithm::RS256, key: EncodingKey::from_rsa_der(der) }
    }

    /// The fixture P-256 key (ES256).
    pub fn ec(kid: &str) -> Self {
        let der = include_bytes!("../fixtures/ec_p256_private.pk8");
        Issuer { kid: kid.into(), alg: Algorithm::ES256, key: EncodingKey::from_ec_der(der) }
    }

    /// The public JWK, with `kid` and `alg`.
    pub fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    /// A token over `claims`, naming this issuer's kid.
    pub fn token(&self, claims: &serde_json::Value) -> String {
        self.token_with(Some(&self.kid), self.alg, claims)
    }

    /// A token naming `kid` (or none), with `alg` in its header.
    pub fn token_with(&self, kid: Option<&str>, alg: Algorithm, claims: &serde_json::Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

/// A key set holding these issuers' keys.
pub fn jwks(issuers: &[&Issuer]) -> JwkSet {
    JwkSet { keys: issuers.iter().map(|i| i.jwk()).collect() }
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub const AUD: &str = "orders-api";
pub const ISS: &str = "https://idp.test";

/// Claims for `user`, valid for an hour.
pub fn claims(user: &str) -> serde_json::Value {
    serde_json::json!({ "sub": user, "aud": AUD, "iss": ISS, "exp": now() + 3600, "iat": now() })
}

