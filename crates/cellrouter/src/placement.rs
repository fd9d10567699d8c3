//! Placement of new users in a region from their hints, trusted in the order
//! GPS > phone prefix > IP (through a CIDR table). Resolvers are pluggable
//! ([`RegionResolver`]); [`Placer`] tries them by trust.

use std::fmt;
use std::net::IpAddr;

use cellctx::{CellId, HintSource, RegionHint};
use ipnet::IpNet;

/// What is known about a new user.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PlacementInput<'a> {
    /// GPS fix: (latitude, longitude) in degrees.
    pub gps: Option<(f64, f64)>,
    /// Phone number in E.164 form (`+4930...`).
    pub phone: Option<&'a str>,
    /// Client IP.
    pub ip: Option<IpAddr>,
}

/// Maps one kind of hint to a region.
pub trait RegionResolver: Send + Sync + fmt::Debug {
    /// Which hint this resolver reads (its trust rank).
    fn source(&self) -> HintSource;
    /// The region, if this resolver knows one.
    fn resolve(&self, input: &PlacementInput<'_>) -> Option<CellId>;
}

/// A latitude/longitude box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoBox {
    /// Southern bound.
    pub lat_min: f64,
    /// Northern bound.
    pub lat_max: f64,
    /// Western bound.
    pub lon_min: f64,
    /// Eastern bound.
    pub lon_max: f64,
}

/// GPS -> region by bounding boxes (first match wins).
#[derive(Debug, Clone, Default)]
pub struct GpsResolver {
    boxes: Vec<(GeoBox, CellId)>,
}

impl GpsResolver {
    /// Adds a box.
    pub fn with_box(mut self, b: GeoBox, region: CellId) -> Self {
        self.boxes.push((b, region));
        self
    }
}

impl RegionResolver for GpsResolver {
    fn source(&self) -> HintSource {
        HintSource::Gps
    }
    fn resolve(&self, input: &PlacementInput<'_>) -> Option<CellId> {
        let (lat, lon) = input.gps?;
        if !lat.is_finite() || !lon.is_finite() {
            return None;
        }
        self.boxes
            .iter()
            .find(|(b, _)| lat >= b.lat_min && lat <= b.lat_max && lon >= b.lon_min && lon <= b.lon_max)
            .map(|(_, r)| r.clone())
    }
}

/// Phone number -> region by longest country/area prefix (digits after `+`).
#[derive(Debug, Clone, Default)]
pub struct PhonePrefixResolver {
    prefixes: Vec<(String, CellId)>,
}

impl PhonePrefixResolver {
    /// Adds a prefix (`"49"`, `"1"`, `"86"`); a leading `+` is ignored.
    pub fn with_prefix(mut self, prefix: &str, region: CellId) -> Self {
        self.prefixes.push((prefix.trim_start_matches('+').to_string(), region));
        self
    }
}

impl RegionResolver for PhonePrefixResolver {
    fn source(&self) -> HintSource {
        HintSource::Phone
    }
    fn resolve(&self, input: &PlacementInput<'_>) -> Option<CellId> {
        let digits = input.phone?.trim().strip_prefix('+')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b' ' || b == b'-') {
            return None;
        }
        let digits: String = digits.chars().filter(char::is_ascii_digit).collect();
        self.prefixes
            .iter()
            .filter(|(p, _)| !p.is_empty() && digits.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, r)| r.clone())
    }
}

/// Client IP -> region by longest-prefix match in a CIDR table.
#[derive(Debug, Clone, Default)]
pub struct IpCidrResolver {
    nets: Vec<(IpNet, CellId)>,
}

impl IpCidrResolver {
    /// Adds a network.
    pub fn with_net(mut self, net: IpNet, region: CellId) -> Self {
        self.nets.push((net, region));
        self
    }
}

impl RegionResolver for IpCidrResolver {
    fn source(&self) -> HintSource {
        HintSource::Ip
    }
    fn resolve(&self, input: &PlacementInput<'_>) -> Option<CellId> {
        let ip = input.ip?;
        self.nets.iter().filter(|(n, _)| n.contains(&ip)).max_by_key(|(n, _)| n.prefix_len()).map(|(_, r)| r.clone())
    }
}

/// Tries resolvers by trust (GPS, then phone, then IP) and returns the first
/// answer as a [`RegionHint`] (what the edge puts in `X-Region-Hint`).
///
/// ```
/// use cellrouter::placement::{GeoBox, GpsResolver, IpCidrResolver, PhonePrefixResolver, PlacementInput, Placer};
/// use cellctx::{CellId, HintSource};
/// let id = |s: &str| CellId::new(s).unwrap();
/// let placer = Placer::new()
///     .with(IpCidrResolver::default().with_net("10.0.0.0/8".parse().unwrap(), id("us-east")))
///     .with(PhonePrefixResolver::default().with_prefix("49", id("eu-central")))
///     .with(GpsResolver::default().with_box(GeoBox { lat_min: 35.0, lat_max: 70.0, lon_min: -10.0, lon_max: 40.0 }, id("eu-west")));
/// let all = PlacementInput { gps: Some((48.8, 2.3)), phone: Some("+49301234"), ip: Some("10.1.2.3".parse().unwrap()) };
/// let hint = placer.place(&all).unwrap();
/// assert_eq!((hint.region.as_str(), hint.source), ("eu-west", HintSource::Gps));
/// let no_gps = PlacementInput { gps: None, ..all };
/// assert_eq!(placer.place(&no_gps).unwrap().region.as_str(), "eu-central");
/// ```
#[derive(Debug, Default)]
pub struct Placer {
    resolvers: Vec<Box<dyn RegionResolver>>,
}

impl Placer {
    /// No resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a resolver (order of addition does not matter: trust does).
    pub fn with(mut self, r: impl RegionResolver + 'static) -> Self {
        self.resolvers.push(Box::new(r));
        self.resolvers.sort_by_key(|r| r.source());
        self
    }

    /// The most trusted region known for `input`.
    pub fn place(&self, input: &PlacementInput<'_>) -> Option<RegionHint> {
        self.resolvers
            .iter()
            .find_map(|r| r.resolve(input).map(|region| RegionHint { region, source: r.source() }))
    }
}
