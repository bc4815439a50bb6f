//! Instants in UTC, printed the one way every stored event uses: ISO-8601 with milliseconds and `Z`.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, serialized as `2026-11-28T13:33:23.123Z`.
///
/// The core never reads a clock: shells build one from their clock with [`UtcTime::from_unix_millis`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcTime(Timestamp);

impl UtcTime {
    /// Milliseconds since the Unix epoch; `None` if out of the representable range (years −9999..=9999).
    pub fn from_unix_millis(ms: i64) -> Option<Self> {
        Timestamp::from_millisecond(ms).ok().map(Self)
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> i64 {
        self.0.as_millisecond()
    }

    /// Parses what clients send: RFC 3339 / ISO-8601 with an offset (`Z`, `+01:00`), or without one, read as
    /// UTC (some server libraries omit it). Sub-millisecond precision is dropped.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let ts = match text.parse::<Timestamp>() {
            Ok(ts) => ts,
            Err(_) => {
                let civil = text.parse::<jiff::civil::DateTime>().ok()?;
                civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp()
            }
        };
        Self::from_unix_millis(ts.as_millisecond())
    }

    /// This instant shifted by `delta_ms` milliseconds; `None` if that leaves the representable range.
    pub fn add_millis(self, delta_ms: i64) -> Option<Self> {
        Self::from_unix_millis(self.unix_millis().checked_add(delta_ms)?)
    }

    /// The UTC calendar date, `YYYY-MM-DD`, and hour, `HH`, used by the storage partitions.
    pub fn date_and_hour(self) -> (String, String) {
        let dt = jiff::tz::TimeZone::UTC.to_datetime(self.0);
        (format!("{:04}-{:02}-{:02}", dt.year(), dt.month(), dt.day()), format!("{:02}", dt.hour()))
    }
}

/// The earlier of two optional instants (either when only one is there).
pub fn earliest(a: Option<UtcTime>, b: Option<UtcTime>) -> Option<UtcTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The later of two optional instants (either when only one is there).
pub fn latest(a: Option<UtcTime>, b: Option<UtcTime>) -> Option<UtcTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Every stored event prints three of these: fill a fixed buffer instead of going through `write!`.
        let dt = jiff::tz::TimeZone::UTC.to_datetime(self.0);
        if dt.year() < 0 {
            return write!(f, "{dt}Z");
        }
        let mut buf = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: u32| {
            for i in (0..width).rev() {
                buf[at + i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, dt.year() as u32);
        put(5, 2, dt.month() as u32);
        put(8, 2, dt.day() as u32);
        put(11, 2, dt.hour() as u32);
        put(14, 2, dt.minute() as u32);
        put(17, 2, dt.second() as u32);
        put(20, 3, dt.millisecond() as u32);
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for UtcTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UtcTime {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("not an ISO-8601 date-time: {text}")))
    }
}

/// A date or date-time as ISO 8601: `YYYY-MM-DD` for a date alone, `YYYY-MM-DDTHH:MM:SS.sssZ` (UTC) for a
/// date-time. Accepts RFC 3339 with any offset, `YYYY-MM-DD[ T]HH:MM[:SS]` (as UTC), `YYYY/MM/DD`,
/// `YYYY.MM.DD` and `YYYY年M月D日`.
pub fn iso_date(text: &str) -> Option<String> {
    let text = text.trim();
    // A date alone stays a date (a birthday is no instant): `UtcTime::parse` would read it as midnight.
    let date_alone = text.len() == 10 && text.as_bytes()[4] == b'-' && text.as_bytes()[7] == b'-';
    if !date_alone && let Some(time) = UtcTime::parse(text) {
        return Some(time.to_string());
    }
    let normalized: String = text.replace(['/', '.', '年', '月'], "-").replace('日', "").trim().to_string();
    let mut parts = normalized.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || y.len() != 4 {
        return None;
    }
    let date = jiff::civil::Date::new(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?).ok()?;
    if date.year() < 1000 {
        return None;
    }
    Some(format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_utc_with_millis() {
        let t = UtcTime::from_unix_millis(1_764_336_803_123).unwrap();
        assert_eq!(t.to_string(), "2025-11-28T13:33:23.123Z");
        assert_eq!(t.date_and_hour(), ("2025-11-28".to_string(), "13".to_string()));
    }

    #[test]
    fn prints_padded_fields() {
        let t = UtcTime::parse("0042-01-02T03:04:05.006Z").unwrap();
        assert_eq!(t.to_string(), "0042-01-02T03:04:05.006Z");
        assert_eq!(UtcTime::from_unix_millis(0).unwrap().to_string(), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn parses_offsets_and_bare_datetimes() {
        let z = UtcTime::parse("2025-11-28T13:33:23.123Z").unwrap();
        assert_eq!(UtcTime::parse("2025-11-28T14:33:23.123+01:00"), Some(z));
        assert_eq!(UtcTime::parse("2025-11-28T13:33:23.123"), Some(z));
        assert_eq!(UtcTime::parse("2025-11-28T13:33:23.123456789Z"), Some(z));
        assert_eq!(UtcTime::parse("yesterday"), None);
        assert_eq!(UtcTime::parse(""), None);
    }

    #[test]
    fn round_trips_through_json() {
        let t = UtcTime::parse("2025-01-02T03:04:05.006Z").unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2025-01-02T03:04:05.006Z\"");
        assert_eq!(serde_json::from_str::<UtcTime>(&json).unwrap(), t);
    }
}
