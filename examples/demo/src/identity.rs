//! Who is who in a demo run: a small identity provider that issues each
//! simulated user a JWT (Ed25519, a key made for the run), the authenticator
//! the gateway checks them with, and the key that signs the gateway's hops to
//! the cells (written to the run directory, read by each cell process).
//!
//! So the gateway routes by a verified identity only (a forged `X-User-ID` is
//! stripped), and the cells accept a context only from a signed hop.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cellctx::auth::jwt::{JwkSet, JwksStore, JwtAuthenticator};
use cellctx::{SigningKey, SigningKeys};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::error::DemoError;

/// The audience the demo's tokens are for.
pub(crate) const AUDIENCE: &str = "cellsdk-demo";
/// The issuer the demo's tokens name.
pub(crate) const ISSUER: &str = "cellsdk-demo-idp";
/// How long a user's token is valid (longer than any run).
const TOKEN_LIFETIME: Duration = Duration::from_secs(6 * 3600);
/// The hop key's file in the run directory.
const HOP_KEY_FILE: &str = "hop.key";
/// The identity provider's private key file.
const IDP_KEY_FILE: &str = "idp.key";
/// The identity provider's public key set.
const JWKS_FILE: &str = "jwks.json";

fn other(what: &str, e: impl std::fmt::Display) -> DemoError {
    DemoError::Other(format!("{what}: {e}"))
}

/// The run's identity provider.
pub(crate) struct DemoIdp {
    kid: String,
    seed: [u8; 32],
    key: EncodingKey,
    jwks: JwkSet,
}

impl std::fmt::Debug for DemoIdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoIdp").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl DemoIdp {
    /// A provider with a fresh Ed25519 key.
    pub(crate) fn generate() -> Result<Self, DemoError> {
        Self::from_seed(rand::random(), format!("demo-{:08x}", rand::random::<u32>()))
    }

    /// The provider whose Ed25519 key is `seed`, named `kid`.
    fn from_seed(seed: [u8; 32], kid: String) -> Result<Self, DemoError> {
        // PKCS#8 v1 wrapping of a 32-byte Ed25519 seed (RFC 8410)
        let mut der = vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        der.extend_from_slice(&seed);
        let key = EncodingKey::from_ed_der(&der);
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).map_err(|e| other("demo signing key", e))?;
        jwk.common.key_id = Some(kid.clone());
        Ok(DemoIdp { kid, seed, key, jwks: JwkSet { keys: vec![jwk] } })
    }

    /// Writes the provider into `dir`: its private key (`idp.key`, owner
    /// only: whoever holds it issues users) and the public key set the
    /// gateways check tokens with (`jwks.json`); returns their paths.
    pub(crate) fn save(&self, dir: &Path) -> Result<(PathBuf, PathBuf), DemoError> {
        let key = dir.join(IDP_KEY_FILE);
        write_private(&key, format!("{} {}\n", self.kid, hex::encode(self.seed)).as_bytes())?;
        let jwks = dir.join(JWKS_FILE);
        std::fs::write(&jwks, serde_json::to_vec_pretty(&self.jwks).map_err(|e| other("jwks", e))?)?;
        Ok((key, jwks))
    }

    /// Reads a provider [`save`](Self::save) wrote.
    pub(crate) fn load(path: &Path) -> Result<Self, DemoError> {
        let text = std::fs::read_to_string(path).map_err(|e| other(&format!("identity provider key {}", path.display()), e))?;
        let (kid, seed) = text.trim().split_once(' ').ok_or_else(|| other("identity provider key", "expected `KID HEX`"))?;
        let seed: [u8; 32] = hex::decode(seed)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| other("identity provider key", "not 32 bytes of hex"))?;
        Self::from_seed(seed, kid.to_string())
    }

    /// A token for `user`, whose registered home region is `home_region`.
    pub(crate) fn token(&self, user: &str, home_region: &str) -> Result<String, DemoError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| other("clock", e))?.as_secs();
        let claims = serde_json::json!({
            "sub": user,
            "aud": AUDIENCE,
            "iss": ISSUER,
            "iat": now,
            "exp": now + TOKEN_LIFETIME.as_secs(),
            "home_region": home_region,
        });
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| other("token", e))
    }
}

/// Makes the run's hop key and writes it (hex, owner-only) into `run_dir`;
/// returns the key and the file the cells read it from.
pub(crate) fn new_hop_key(run_dir: &Path) -> Result<(SigningKey, PathBuf), DemoError> {
    let secret: [u8; 32] = rand::random();
    let path = run_dir.join(HOP_KEY_FILE);
    write_private(&path, hex::encode(secret).as_bytes())?;
    let key = SigningKey::try_new(secret).map_err(|e| other("hop key", e))?;
    Ok((key, path))
}

/// Reads the hop key the gateway signs with (and the cells verify with).
pub(crate) fn read_hop_key(path: &Path) -> Result<SigningKey, DemoError> {
    let text = std::fs::read_to_string(path).map_err(|e| other(&format!("hop key {}", path.display()), e))?;
    let secret = hex::decode(text.trim()).map_err(|e| other("hop key", e))?;
    SigningKey::try_new(secret).map_err(|e| other("hop key", e))
}

/// Reads the hop key a cell verifies the gateway's hops with.
pub(crate) fn read_hop_keys(path: &Path) -> Result<SigningKeys, DemoError> {
    Ok(SigningKeys::new(read_hop_key(path)?))
}

/// The authenticator of a gateway that checks tokens against the key set in
/// `path` (`jwks.json` from [`DemoIdp::save`]).
pub(crate) fn authenticator_from_file(path: &Path) -> Result<JwtAuthenticator, DemoError> {
    let text = std::fs::read_to_string(path).map_err(|e| other(&format!("key set {}", path.display()), e))?;
    let jwks: JwkSet = serde_json::from_str(&text).map_err(|e| other(&format!("key set {}", path.display()), e))?;
    let auth = JwtAuthenticator::try_new(JwksStore::from_set(&jwks), [AUDIENCE]).map_err(|e| other("authenticator", e))?;
    Ok(auth.with_issuer(ISSUER))
}

/// Arguments of `demo keys`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct KeysArgs {
    /// Where to write `hop.key`, `idp.key` and `jwks.json`.
    #[arg(long, default_value = ".")]
    pub(crate) dir: PathBuf,
}

/// `demo keys`: a deployment's keys, made once and copied to the hosts
/// (`hop.key` to the gateways and cells, `jwks.json` to the gateways,
/// `idp.key` to whoever issues users' tokens).
pub(crate) fn keys(args: &KeysArgs) -> Result<(), DemoError> {
    std::fs::create_dir_all(&args.dir)?;
    let (_, hop) = new_hop_key(&args.dir)?;
    let (idp, jwks) = DemoIdp::generate()?.save(&args.dir)?;
    for p in [hop, idp, jwks] {
        println!("{}", p.display());
    }
    Ok(())
}

/// Arguments of `demo token`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TokenArgs {
    /// The identity provider's key (`idp.key` from `demo keys`).
    #[arg(long)]
    pub(crate) idp_key: PathBuf,
    /// The user (the gateway routes by it).
    #[arg(long)]
    pub(crate) user: String,
    /// The user's registered home region.
    #[arg(long)]
    pub(crate) region: String,
}

/// `demo token`: prints a user's token (for `Authorization: Bearer ...`).
pub(crate) fn token(args: &TokenArgs) -> Result<(), DemoError> {
    println!("{}", DemoIdp::load(&args.idp_key)?.token(&args.user, &args.region)?);
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DemoError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hop_keys_round_trip_through_the_run_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (_key, path) = new_hop_key(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(read_hop_keys(&path).is_ok());
        std::fs::write(&path, "not hex").unwrap();
        assert!(read_hop_keys(&path).is_err());
    }

    #[test]
    fn a_saved_provider_issues_tokens_its_key_set_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let idp = DemoIdp::generate().unwrap();
        let (key, jwks) = idp.save(dir.path()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        let again = DemoIdp::load(&key).unwrap();
        assert_eq!(again.kid, idp.kid);
        let token = again.token("beijing-user-1", "beijing").unwrap();
        let set: JwkSet = serde_json::from_str(&std::fs::read_to_string(&jwks).unwrap()).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        v.set_audience(&[AUDIENCE]);
        v.set_issuer(&[ISSUER]);
        let dk = jsonwebtoken::DecodingKey::from_jwk(&set.keys[0]).unwrap();
        assert_eq!(jsonwebtoken::decode::<serde_json::Value>(&token, &dk, &v).unwrap().claims["sub"], "beijing-user-1");
        assert!(authenticator_from_file(&jwks).is_ok());
        std::fs::write(&key, "kid nothex").unwrap();
        assert!(DemoIdp::load(&key).is_err());
    }

    #[test]
    fn tokens_name_the_user_audience_issuer_and_home_region() {
        let idp = DemoIdp::generate().unwrap();
        let token = idp.token("beijing-user-1", "beijing").unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        v.set_audience(&[AUDIENCE]);
        v.set_issuer(&[ISSUER]);
        let key = jsonwebtoken::DecodingKey::from_jwk(&idp.jwks.keys[0]).unwrap();
        let data = jsonwebtoken::decode::<serde_json::Value>(&token, &key, &v).unwrap();
        assert_eq!(data.claims["sub"], "beijing-user-1");
        assert_eq!(data.claims["home_region"], "beijing");
        assert_eq!(data.header.kid.as_deref(), Some(idp.kid.as_str()));
        // another run's provider does not verify it
        let other = DemoIdp::generate().unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&other.jwks.keys[0]).unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &key, &v).is_err());
    }
}
