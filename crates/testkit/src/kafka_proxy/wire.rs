//! The little of Kafka's wire protocol the proxy needs: frames, request
//! headers, and the broker addresses in `Metadata` and `FindCoordinator`
//! responses (every version, flexible or not), rewritten so that a client
//! which bootstrapped through the proxy keeps talking through it.

use std::net::SocketAddr;

/// `Metadata`'s API key.
pub(crate) const METADATA: i16 = 3;
/// `FindCoordinator`'s API key.
pub(crate) const FIND_COORDINATOR: i16 = 10;

/// Splits the first whole frame (4-byte big-endian size, then the body)
/// off `buf`; `None` until one has arrived.
pub(crate) fn take_frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let size: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(size)).ok()?;
    if buf.len() < 4 + len {
        return None;
    }
    let frame = buf[..4 + len].to_vec();
    buf.drain(..4 + len);
    Some(frame)
}

/// A request frame's (API key, API version, correlation id).
pub(crate) fn request_header(frame: &[u8]) -> Option<(i16, i16, i32)> {
    let b = frame.get(4..12)?;
    Some((i16::from_be_bytes([b[0], b[1]]), i16::from_be_bytes([b[2], b[3]]), i32::from_be_bytes([b[4], b[5], b[6], b[7]])))
}

/// A response frame's correlation id.
pub(crate) fn response_correlation(frame: &[u8]) -> Option<i32> {
    frame.get(4..8).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Whether the response to (`key`, `version`) is one whose broker
/// addresses the proxy rewrites.
pub(crate) fn rewritten(key: i16) -> bool {
    key == METADATA || key == FIND_COORDINATOR
}

/// `frame` (a response to `key` at `version`) with every broker address that
/// `map` knows replaced by what it returns; `None` when the frame does not
/// parse (it is then forwarded as it is).
pub(crate) fn rewrite_response(key: i16, version: i16, frame: &[u8], map: &dyn Fn(&str, i32) -> Option<SocketAddr>) -> Option<Vec<u8>> {
    let body = frame.get(4..)?;
    let flexible = match key {
        METADATA => version >= 9,
        FIND_COORDINATOR => version >= 3,
        _ => return None,
    };
    // the size first, set at the end
    let mut out = Vec::with_capacity(frame.len() + 16);
    out.extend_from_slice(&[0; 4]);
    let mut r = Rewriter { body, pos: 4, copied: 0, out, flexible, map };
    if flexible {
        r.skip_tags()?;
    }
    match key {
        METADATA => r.metadata(version)?,
        _ => r.find_coordinator(version)?,
    }
    let mut out = r.finish();
    let len = u32::try_from(out.len() - 4).ok()?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Some(out)
}

/// Walks a response body, copying it and swapping addresses.
struct Rewriter<'a> {
    body: &'a [u8],
    pos: usize,
    /// Body bytes up to here are in `out` already.
    copied: usize,
    out: Vec<u8>,
    flexible: bool,
    map: &'a dyn Fn(&str, i32) -> Option<SocketAddr>,
}

impl Rewriter<'_> {
    fn metadata(&mut self, v: i16) -> Option<()> {
        if v >= 3 {
            self.skip(4)?; // throttle_time_ms
        }
        for _ in 0..self.array_len()? {
            self.skip(4)?; // node_id
            self.address()?;
            if v >= 1 {
                self.nullable_string()?; // rack
            }
            if self.flexible {
                self.skip_tags()?;
            }
        }
        Some(()) // the rest (cluster id, controller, topics) is copied as it is
    }

    fn find_coordinator(&mut self, v: i16) -> Option<()> {
        if v >= 4 {
            self.skip(4)?; // throttle_time_ms
            for _ in 0..self.array_len()? {
                self.nullable_string()?; // key
                self.skip(4)?; // node_id
                self.address()?;
                self.skip(2)?; // error_code
                self.nullable_string()?; // error_message
                self.skip_tags()?;
            }
            return Some(());
        }
        if v >= 1 {
            self.skip(4)?; // throttle_time_ms
        }
        self.skip(2)?; // error_code
        if v >= 1 {
            self.nullable_string()?; // error_message
        }
        self.skip(4)?; // node_id
        self.address()
    }

    /// A host and a port: replaced when the map knows them.
    fn address(&mut self) -> Option<()> {
        let start = self.pos;
        let host = self.nullable_string()?.unwrap_or_default();
        let port = self.i32()?;
        if let Some(to) = (self.map)(&host, port) {
            self.out.extend_from_slice(&self.body[self.copied..start]);
            self.put_string(&to.ip().to_string());
            self.out.extend_from_slice(&i32::from(to.port()).to_be_bytes());
            self.copied = self.pos;
        }
        Some(())
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(&self.body[self.copied..]);
        self.out
    }

    fn put_string(&mut self, s: &str) {
        if self.flexible {
            put_uvarint(&mut self.out, s.len() as u64 + 1);
        } else {
            self.out.extend_from_slice(&u16::try_from(s.len()).unwrap_or(0).to_be_bytes());
        }
        self.out.extend_from_slice(s.as_bytes());
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n)?;
        (end <= self.body.len()).then(|| self.pos = end)
    }

    fn i32(&mut self) -> Option<i32> {
        let b = self.body.get(self.pos..self.pos + 4)?;
        self.pos += 4;
        Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.body.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn array_len(&mut self) -> Option<usize> {
        if self.flexible {
            return usize::try_from(self.uvarint()?.checked_sub(1)?).ok();
        }
        usize::try_from(self.i32()?).ok()
    }

    fn nullable_string(&mut self) -> Option<Option<String>> {
        let len = if self.flexible {
            match self.uvarint()? {
                0 => return Some(None),
                n => usize::try_from(n - 1).ok()?,
            }
        } else {
            let b = self.body.get(self.pos..self.pos + 2)?;
            self.pos += 2;
            match i16::from_be_bytes([b[0], b[1]]) {
                -1 => return Some(None),
                n => usize::try_from(n).ok()?,
            }
        };
        let s = self.body.get(self.pos..self.pos.checked_add(len)?)?;
        self.pos += len;
        Some(Some(String::from_utf8_lossy(s).into_owned()))
    }

    fn skip_tags(&mut self) -> Option<()> {
        for _ in 0..self.uvarint()? {
            self.uvarint()?;
            let size = usize::try_from(self.uvarint()?).ok()?;
            self.skip(size)?;
        }
        Some(())
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a response body field by field, as a broker would.
    struct Body {
        b: Vec<u8>,
        flexible: bool,
    }

    impl Body {
        fn new(correlation: i32, flexible: bool) -> Self {
            let mut b = Body { b: correlation.to_be_bytes().to_vec(), flexible };
            if flexible {
                b.b.push(0); // header tags
            }
            b
        }
        fn i16(mut self, v: i16) -> Self {
            self.b.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.b.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn len(mut self, n: usize) -> Self {
            match self.flexible {
                true => put_uvarint(&mut self.b, n as u64 + 1),
                false => self.b.extend_from_slice(&(n as i32).to_be_bytes()),
            }
            self
        }
        fn str(mut self, s: Option<&str>) -> Self {
            match (s, self.flexible) {
                (None, true) => self.b.push(0),
                (None, false) => self.b.extend_from_slice(&(-1i16).to_be_bytes()),
                (Some(s), true) => {
                    put_uvarint(&mut self.b, s.len() as u64 + 1);
                    self.b.extend_from_slice(s.as_bytes());
                }
                (Some(s), false) => {
                    self.b.extend_from_slice(&(s.len() as i16).to_be_bytes());
                    self.b.extend_from_slice(s.as_bytes());
                }
            }
            self
        }
        fn tags(mut self) -> Self {
            if self.flexible {
                // one unknown tag, which must be skipped whole
                self.b.extend_from_slice(&[1, 7, 2, 0xAB, 0xCD]);
            }
            self
        }
        fn frame(self) -> Vec<u8> {
            let mut f = (self.b.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&self.b);
            f
        }
    }

    fn metadata(v: i16, broker_port: i32) -> Vec<u8> {
        let flexible = v >= 9;
        let mut b = Body::new(42, flexible);
        if v >= 3 {
            b = b.i32(0);
        }
        b = b.len(2);
        for (node, port) in [(1, broker_port), (2, 9999)] {
            b = b.i32(node).str(Some("127.0.0.1")).i32(port);
            if v >= 1 {
                b = b.str(None);
            }
            b = b.tags();
        }
        // cluster id, controller, and no topics: copied as they are
        b.str(Some("cluster-x")).i32(1).len(0).tags().frame()
    }

    fn proxy_map(port: i32) -> impl Fn(&str, i32) -> Option<SocketAddr> {
        move |host, p| (host == "127.0.0.1" && p == port).then(|| SocketAddr::from(([127, 0, 0, 2], 4000)))
    }

    #[test]
    fn metadata_brokers_are_rewritten_in_every_version_and_the_rest_kept() {
        for v in [0, 1, 3, 8, 9, 12] {
            let got = rewrite_response(METADATA, v, &metadata(v, 9092), &proxy_map(9092)).unwrap();
            // the same response a broker at the proxy's address would send for node 1
            let mut want = metadata(v, 4000);
            let at = want.windows(9).position(|w| w == b"127.0.0.1").unwrap();
            want[at..at + 9].copy_from_slice(b"127.0.0.2");
            assert_eq!(got, want, "version {v}");
            assert_eq!(take_frame(&mut got.clone()), Some(got), "one whole frame, size updated");
        }
    }

    #[test]
    fn find_coordinator_is_rewritten_in_every_shape() {
        let single = |v: i16, port: i32| {
            let mut b = Body::new(7, v >= 3);
            if v >= 1 {
                b = b.i32(0);
            }
            b = b.i16(0);
            if v >= 1 {
                b = b.str(None);
            }
            b.i32(1).str(Some("127.0.0.1")).i32(port).tags().frame()
        };
        for v in [0, 2, 3] {
            let got = rewrite_response(FIND_COORDINATOR, v, &single(v, 9092), &proxy_map(9092)).unwrap();
            let mut want = single(v, 4000);
            let at = want.windows(9).position(|w| w == b"127.0.0.1").unwrap();
            want[at..at + 9].copy_from_slice(b"127.0.0.2");
            assert_eq!(got, want, "version {v}");
        }
        let batched = |port: i32| {
            Body::new(7, true).i32(0).len(1).str(Some("group-a")).i32(1).str(Some("127.0.0.1")).i32(port).i16(0).str(None).tags().tags().frame()
        };
        let got = rewrite_response(FIND_COORDINATOR, 4, &batched(9092), &proxy_map(9092)).unwrap();
        let mut want = batched(4000);
        let at = want.windows(9).position(|w| w == b"127.0.0.1").unwrap();
        want[at..at + 9].copy_from_slice(b"127.0.0.2");
        assert_eq!(got, want);
    }

    #[test]
    fn unknown_addresses_and_torn_frames_are_left_alone() {
        let frame = metadata(12, 9092);
        assert_eq!(rewrite_response(METADATA, 12, &frame, &proxy_map(1)).unwrap(), frame, "no address known: same bytes");
        assert_eq!(rewrite_response(METADATA, 12, &frame[..20], &proxy_map(9092)), None, "torn: not parsed");
        assert_eq!(rewrite_response(18, 3, &frame, &proxy_map(9092)), None, "other APIs are not rewritten");
    }

    #[test]
    fn frames_split_anywhere_are_reassembled() {
        let a = metadata(1, 1);
        let b = metadata(9, 2);
        let mut all = [a.clone(), b.clone()].concat();
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while !all.is_empty() {
            buf.extend(all.drain(..all.len().min(5)));
            while let Some(f) = take_frame(&mut buf) {
                got.push(f);
            }
        }
        assert_eq!(got, vec![a, b]);
        let req = [0u8, 0, 0, 10, 0, 3, 0, 12, 0, 0, 0, 9, 0, 0];
        assert_eq!(request_header(&req), Some((3, 12, 9)));
    }
}
