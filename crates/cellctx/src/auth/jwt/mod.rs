//! JWT bearer authentication against a JWKS (feature `jwt`).
//!
//! [`JwtAuthenticator`] reads `Authorization: Bearer <jwt>`, finds the key by
//! the token's `kid` in a [`JwksStore`] (static, or refreshed from a URL in a
//! background task: [`JwksStore::spawn_refresh`], [`HttpJwks`]), checks the
//! signature (RS256, ES256 or EdDSA, the algorithm fixed by the key, never by
//! the token), `exp` (required), `nbf`, `aud` (required, one of the accepted
//! audiences), `iss` (when configured) with a leeway, and makes an
//! [`Identity`](crate::auth::Identity) from the claims.

mod authenticator;
mod keys;
mod refresh;

pub use authenticator::{DEFAULT_LEEWAY, JwtAuthenticator};
pub use keys::{ALGORITHMS, JwksStore};
pub use refresh::{FETCH_TIMEOUT, HttpJwks, JwksFetch, MAX_JWKS_BYTES};
pub use jsonwebtoken::jwk::JwkSet;
