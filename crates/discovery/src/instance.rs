//! [`Instance`]: what one service instance writes into the registry, and the key
//! layout `<root>/<service>/<cell>/<id>`.

use std::collections::BTreeMap;

use cellctx::CellId;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The default key root: instances live under `/cellsdk/services/<service>/<cell>/<id>`.
pub const DEFAULT_ROOT: &str = "/cellsdk/services";

/// The default weight of an instance.
pub const DEFAULT_WEIGHT: u32 = 100;

/// Whether an instance takes new requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Serving: callers may send it new requests.
    #[default]
    Up,
    /// Shutting down: finishing what it has, takes no new requests.
    Draining,
}

/// One registered service instance, stored as JSON under
/// `<root>/<service>/<cell>/<id>` and tied to the instance's etcd lease.
///
/// ```
/// use discovery::Instance;
/// let inst = Instance::try_new("orders", "cn-sh-1".parse().unwrap(), "10.0.0.7:8080")
///     .unwrap()
///     .with_region("cn-east")
///     .with_version("1.4.2")
///     .with_weight(50)
///     .with_metadata("zone", "a");
/// assert_eq!(inst.id, "10.0.0.7:8080");
/// assert_eq!(inst.key("/cellsdk/services"), "/cellsdk/services/orders/cn-sh-1/10.0.0.7:8080");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Instance {
    /// The service name (a path segment: no `/`, no spaces).
    pub service: String,
    /// The cell the instance serves.
    pub cell: CellId,
    /// The instance id, unique within its service and cell (defaults to the address).
    pub id: String,
    /// Where to reach it: `host:port`.
    pub address: String,
    /// The region the instance runs in.
    #[serde(default)]
    pub region: String,
    /// The software version.
    #[serde(default)]
    pub version: String,
    /// The relative weight for selection within a cell; 0 takes no traffic.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Free-form labels.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Up or draining.
    #[serde(default)]
    pub state: InstanceState,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

impl Instance {
    /// A new `Up` instance of `service` in `cell` at `address` (`host:port`), with
    /// the address as its id and weight [`DEFAULT_WEIGHT`].
    pub fn try_new(service: impl Into<String>, cell: CellId, address: impl Into<String>) -> Result<Self, Error> {
        let address = address.into();
        let inst = Instance {
            service: service.into(),
            cell,
            id: address.clone(),
            address,
            region: String::new(),
            version: String::new(),
            weight: DEFAULT_WEIGHT,
            metadata: BTreeMap::new(),
            state: InstanceState::Up,
        };
        inst.validate().map_err(Error::InvalidConfig)?;
        Ok(inst)
    }

    /// Sets the instance id (a path segment: no `/`, no spaces).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Sets the region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Sets the version.
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Sets the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Adds a metadata label.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Whether the instance takes new requests (up, weight above zero).
    pub fn is_serving(&self) -> bool {
        self.state == InstanceState::Up && self.weight > 0
    }

    /// The instance's key under `root`.
    pub fn key(&self, root: &str) -> String {
        format!("{}{}/{}", service_prefix(root, &self.service), self.cell, self.id)
    }

    /// Checks every field; the reason on failure.
    pub fn validate(&self) -> Result<(), String> {
        check_segment("service", &self.service)?;
        check_segment("id", &self.id)?;
        if self.address.is_empty() {
            return Err("empty address".into());
        }
        let authority: http::uri::Authority =
            self.address.parse().map_err(|_| format!("address {:?} is not host:port", self.address))?;
        if authority.port_u16().is_none() || authority.host().is_empty() || authority.as_str().contains('@') {
            return Err(format!("address {:?} is not host:port", self.address));
        }
        Ok(())
    }

    /// Encodes the registration value (JSON).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings, integers and a string map cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and validates a registration read at `key` under the service
    /// prefix `prefix` (`<root>/<service>/`): the key's cell and id must match the
    /// value's.
    pub fn decode(prefix: &str, key: &[u8], value: &[u8]) -> Result<Self, Error> {
        let key_str = String::from_utf8_lossy(key);
        let bad = |reason: String| Error::Malformed { key: key_str.to_string(), reason };
        if value.is_empty() {
            return Err(bad("empty value".into()));
        }
        let rest = key_str.strip_prefix(prefix).ok_or_else(|| bad("outside the service prefix".into()))?;
        let (cell, id) = rest.split_once('/').ok_or_else(|| bad("key is not <cell>/<id>".into()))?;
        let inst: Instance = serde_json::from_slice(value).map_err(|e| bad(format!("bad JSON: {e}")))?;
        inst.validate().map_err(bad)?;
        if inst.cell.as_str() != cell || inst.id != id || format!("{}/", inst.service) != prefix_tail(prefix) {
            return Err(bad("value does not match its key".into()));
        }
        Ok(inst)
    }
}

/// `<root>/<service>/`, the prefix a service's instances live under.
pub fn service_prefix(root: &str, service: &str) -> String {
    format!("{}/{}/", root.trim_end_matches('/'), service)
}

fn prefix_tail(prefix: &str) -> &str {
    // "<root>/<service>/" -> "<service>/"
    let trimmed = prefix.trim_end_matches('/');
    match trimmed.rfind('/') {
        Some(i) => &prefix[i + 1..],
        None => prefix,
    }
}

pub(crate) fn check_segment(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("empty {what}"));
    }
    if s.len() > 128 {
        return Err(format!("{what} longer than 128 bytes"));
    }
    if !s.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
        return Err(format!("{what} {s:?} must be visible ASCII without '/'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    fn cell(s: &str) -> CellId {
        s.parse().unwrap()
    }

    #[test]
    fn rejects_bad_fields() {
        assert!(Instance::try_new("", cell("a"), "127.0.0.1:1").is_err());
        assert!(Instance::try_new("a/b", cell("a"), "127.0.0.1:1").is_err());
        assert!(Instance::try_new("svc", cell("a"), "").is_err());
        assert!(Instance::try_new("svc", cell("a"), "no-port").is_err());
        assert!(Instance::try_new("svc", cell("a"), "u@h:1").is_err());
        assert!(Instance::try_new("svc", cell("a"), "h:1").is_ok());
        assert!(Instance::try_new("svc", cell("a"), "h:1").unwrap().with_id("x/y").validate().is_err());
    }

    #[test]
    fn decode_checks_key_against_value() {
        let inst = Instance::try_new("svc", cell("c1"), "127.0.0.1:80").unwrap();
        let prefix = service_prefix("/r", "svc");
        let key = inst.key("/r");
        assert_eq!(Instance::decode(&prefix, key.as_bytes(), &inst.to_json()).unwrap(), inst);
        // wrong cell in the key
        let err = Instance::decode(&prefix, b"/r/svc/c2/127.0.0.1:80", &inst.to_json()).unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err}");
        // wrong service in the value
        let other = Instance::try_new("other", cell("c1"), "127.0.0.1:80").unwrap();
        assert!(Instance::decode(&prefix, key.as_bytes(), &other.to_json()).is_err());
        // not JSON, empty, outside the prefix, no id segment
        assert!(Instance::decode(&prefix, key.as_bytes(), b"{not json").is_err());
        assert!(Instance::decode(&prefix, key.as_bytes(), b"").is_err());
        assert!(Instance::decode(&prefix, b"/elsewhere/x/y", &inst.to_json()).is_err());
        assert!(Instance::decode(&prefix, b"/r/svc/c1", &inst.to_json()).is_err());
        // an invalid cell inside the JSON
        let json = String::from_utf8(inst.to_json()).unwrap().replace("\"c1\"", "\"C 1\"");
        assert!(Instance::decode(&prefix, key.as_bytes(), json.as_bytes()).is_err());
    }

    #[test]
    fn missing_optional_fields_take_defaults() {
        let v = br#"{"service":"svc","cell":"c1","id":"i1","address":"h:1"}"#;
        let inst = Instance::decode("/r/svc/", b"/r/svc/c1/i1", v).unwrap();
        assert_eq!(inst.weight, DEFAULT_WEIGHT);
        assert_eq!(inst.state, InstanceState::Up);
        assert!(inst.is_serving());
    }

    proptest! {
        #[test]
        fn encode_decode_roundtrip(
            svc in "[a-z][a-z0-9-]{0,15}",
            c in "[a-z0-9-]{1,32}",
            host in "[a-z][a-z0-9.-]{0,20}",
            port in 1u16..,
            weight in any::<u32>(),
            region in "[ -~]{0,16}",
            meta in proptest::collection::btree_map("[a-z]{1,8}", "[ -~]{0,16}", 0..4),
            draining in any::<bool>(),
        ) {
            let mut inst = Instance::try_new(svc.clone(), cell(&c), format!("{host}:{port}")).unwrap()
                .with_weight(weight).with_region(region);
            inst.metadata = meta;
            if draining { inst.state = InstanceState::Draining; }
            let prefix = service_prefix(DEFAULT_ROOT, &svc);
            let back = Instance::decode(&prefix, inst.key(DEFAULT_ROOT).as_bytes(), &inst.to_json()).unwrap();
            prop_assert_eq!(back, inst);
        }
    }
}
