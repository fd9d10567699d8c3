//! Reading a bearer token from `Authorization`.

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::error::AuthFailure;

/// Longest `Authorization` value read, in bytes (8 KiB); longer is malformed.
pub const MAX_CREDENTIAL_LEN: usize = 8 * 1024;

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 6750).
///
/// `Ok(None)` without an `Authorization` header; [`AuthFailure::Malformed`]
/// when it is repeated, longer than [`MAX_CREDENTIAL_LEN`], not UTF-8, of
/// another scheme, or the token is empty or holds characters outside the
/// RFC 6750 `b64token` set.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, AuthFailure> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() || value.len() > MAX_CREDENTIAL_LEN {
        return Err(AuthFailure::Malformed);
    }
    let s = value.to_str().map_err(|_| AuthFailure::Malformed)?;
    let (scheme, token) = s.split_once(' ').ok_or(AuthFailure::Malformed)?;
    let token = token.trim_start_matches(' ');
    let b64token = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || !token.bytes().all(b64token) {
        return Err(AuthFailure::Malformed);
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::HeaderValue;

    use super::*;

    #[test]
    fn reads_bearer_and_refuses_the_rest() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), Ok(None));
        h.insert(AUTHORIZATION, HeaderValue::from_static("bEaReR abc.def.ghi"));
        assert_eq!(bearer_token(&h), Ok(Some("abc.def.ghi")));
        for bad in ["Basic abc", "Bearer", "Bearer ", "Bearer a b", "Bearer a,b"] {
            h.insert(AUTHORIZATION, HeaderValue::from_static(bad));
            assert_eq!(bearer_token(&h), Err(AuthFailure::Malformed), "{bad}");
        }
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(bearer_token(&h), Err(AuthFailure::Malformed), "repeated");
        h.insert(AUTHORIZATION, HeaderValue::from_bytes(b"Bearer \xff").unwrap());
        assert_eq!(bearer_token(&h), Err(AuthFailure::Malformed), "not UTF-8");
        h.insert(AUTHORIZATION, HeaderValue::try_from(format!("Bearer {}", "a".repeat(MAX_CREDENTIAL_LEN))).unwrap());
        assert_eq!(bearer_token(&h), Err(AuthFailure::Malformed), "oversized");
    }
}
