//! [`Alert`]: one alert as the Alertmanager v2 API takes it (`postableAlert`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

/// A label set: label name to value (also the type of annotations).
pub type Labels = BTreeMap<String, String>;

/// One alert, serialized as an element of the JSON list `POST /api/v2/alerts`
/// takes: `{"labels", "annotations", "startsAt", "endsAt", "generatorURL"}`,
/// times in RFC 3339 (UTC, milliseconds).
///
/// A firing alert has no `endsAt` (Alertmanager then resolves it on its own
/// after its `resolve_timeout` unless it is sent again, which the sink does
/// every repeat interval); its resolve notification is the same labels,
/// annotations and `startsAt` with `endsAt` set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Alert {
    /// Identify the alert: `alertname`, `cell`, `severity`, the sink's static
    /// labels and, for replication lag, `origin`.
    pub labels: Labels,
    /// Describe it: `summary`, `description` and per-kind details.
    pub annotations: Labels,
    /// When it started firing.
    #[serde(rename = "startsAt", serialize_with = "rfc3339")]
    pub starts_at: SystemTime,
    /// When it was resolved; `None` while it fires.
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none", serialize_with = "rfc3339_opt")]
    pub ends_at: Option<SystemTime>,
    /// A link back to the source, when configured.
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    pub generator_url: Option<String>,
}

impl Alert {
    /// The `alertname` label (empty when absent).
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }

    /// Whether this is a resolve notification (`endsAt` set).
    pub fn is_resolved(&self) -> bool {
        self.ends_at.is_some()
    }

    /// `firing` or `resolved` (the `status` metric attribute).
    pub fn status(&self) -> &'static str {
        if self.is_resolved() { "resolved" } else { "firing" }
    }
}

/// RFC 3339 in UTC with exactly three fraction digits (milliseconds, cut),
/// e.g. `2026-12-07T02:30:00.120Z`: a fixed width, where `time`'s `Rfc3339`
/// writes as few digits as it can (`.12Z`). The calendar is `time`'s.
pub(crate) fn format_rfc3339(t: SystemTime) -> Result<String, std::fmt::Error> {
    let t = time::OffsetDateTime::from(t);
    if !(0..=9999).contains(&t.year()) {
        return Err(std::fmt::Error);
    }
    Ok(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    ))
}

fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let text = format_rfc3339(*t).map_err(serde::ser::Error::custom)?;
    s.serialize_str(&text)
}

fn rfc3339_opt<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn serializes_as_a_postable_alert() {
        let start = UNIX_EPOCH + Duration::from_millis(1_765_074_600_123);
        let mut alert = Alert {
            labels: [("alertname".to_string(), "CellDrained".to_string()), ("cell".into(), "eu-1".into())].into(),
            annotations: [("summary".to_string(), "cell eu-1 drained".to_string())].into(),
            starts_at: start,
            ends_at: None,
            generator_url: None,
        };
        assert_eq!(
            serde_json::to_value(&alert).unwrap(),
            serde_json::json!({
                "labels": { "alertname": "CellDrained", "cell": "eu-1" },
                "annotations": { "summary": "cell eu-1 drained" },
                "startsAt": "2025-12-07T02:30:00.123Z",
            })
        );
        assert_eq!((alert.name(), alert.status()), ("CellDrained", "firing"));
        alert.ends_at = Some(start + Duration::from_secs(60));
        alert.generator_url = Some("http://ctl/engine".into());
        let v = serde_json::to_value(&alert).unwrap();
        assert_eq!(v["endsAt"], "2025-12-07T02:31:00.123Z");
        assert_eq!(v["generatorURL"], "http://ctl/engine");
        assert_eq!(alert.status(), "resolved");
    }

    #[test]
    fn times_always_carry_three_fraction_digits() {
        for (ms, text) in [
            (1_765_074_600_120, "2025-12-07T02:30:00.120Z"),
            (1_765_074_600_100, "2025-12-07T02:30:00.100Z"),
            (1_765_074_600_000, "2025-12-07T02:30:00.000Z"),
            (1_765_074_600_007, "2025-12-07T02:30:00.007Z"),
        ] {
            assert_eq!(format_rfc3339(UNIX_EPOCH + Duration::from_millis(ms)).unwrap(), text);
        }
        // Sub-millisecond parts are cut, not rounded.
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::from_nanos(1_765_074_600_999_999_999)).unwrap(),
            "2025-12-07T02:30:00.999Z"
        );
    }
}
