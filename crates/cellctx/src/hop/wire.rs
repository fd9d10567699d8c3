//! Parsing the signature header: the `v2` form and the legacy `v1` form.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::sign::SIG_LEN;

/// A parsed signature header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// `v1;exp=<s>;sig=<mac>`: bound to no request.
    V1 { expires_at: u64, mac: [u8; SIG_LEN] },
    /// `v2;iat=<s>;exp=<s>;sig=<mac>`.
    V2 { issued_at: u64, expires_at: u64, mac: [u8; SIG_LEN] },
}

/// Parses either form; `None` when it is neither.
pub(crate) fn parse_any(sig: &[u8]) -> Option<Parsed> {
    if let Some(rest) = sig.strip_prefix(b"v2;iat=") {
        let (iat, rest) = number(rest)?;
        let rest = rest.strip_prefix(b";exp=")?;
        let (exp, rest) = number(rest)?;
        let b64 = rest.strip_prefix(b";sig=")?;
        return Some(Parsed::V2 { issued_at: iat, expires_at: exp, mac: mac(b64)? });
    }
    crate::sign::parse(sig).map(|(expires_at, mac)| Parsed::V1 { expires_at, mac })
}

/// A decimal number (1 to 20 digits) at the start of `s`, and the rest.
fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let end = s.iter().position(|b| !b.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 || end > 20 {
        return None;
    }
    let (digits, rest) = s.split_at(end);
    let n = std::str::from_utf8(digits).ok()?.parse::<u64>().ok()?;
    Some((n, rest))
}

fn mac(b64: &[u8]) -> Option<[u8; SIG_LEN]> {
    if b64.len() != 43 {
        return None;
    }
    let mut mac = [0u8; SIG_LEN];
    let n = URL_SAFE_NO_PAD.decode_slice(b64, &mut mac).ok()?;
    (n == SIG_LEN).then_some(mac)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn parses_both_forms_and_refuses_the_rest() {
        let sig = "A".repeat(43);
        assert!(matches!(
            parse_any(format!("v2;iat=10;exp=40;sig={sig}").as_bytes()),
            Some(Parsed::V2 { issued_at: 10, expires_at: 40, .. })
        ));
        assert!(matches!(parse_any(format!("v1;exp=40;sig={sig}").as_bytes()), Some(Parsed::V1 { expires_at: 40, .. })));
        for bad in [
            String::new(),
            "v2".into(),
            format!("v2;iat=;exp=1;sig={sig}"),
            format!("v2;iat=1;exp=;sig={sig}"),
            format!("v2;iat=1;exp=2;sig={sig}A"),
            "v2;iat=1;exp=2;sig=short".to_owned(),
            format!("v2;iat=123456789012345678901;exp=2;sig={sig}"),
            format!("v2;iat=1;exp=2;xsig={sig}"),
            format!("v3;iat=1;exp=2;sig={sig}"),
        ] {
            assert_eq!(parse_any(bad.as_bytes()), None, "{bad}");
        }
    }
}
