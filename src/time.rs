//! Instants, durations and their text forms, in one place.
//!
//! An instant is a [`jiff::Timestamp`] (UTC), a length of time a
//! [`jiff::SignedDuration`]; a zone comes in only where a person's calendar
//! does (schedules, `--at` dates, the tables printed for people).
//!
//! The stored text forms are the ones coffer wrote from its first version,
//! so repositories, catalogs and state files read both ways between older
//! and newer binaries: RFC 3339 with 0, 3, 6 or 9 fraction digits (as many
//! as the instant needs, in those steps) and `Z` in JSON; the same with
//! `+00:00` in catalog rows. jiff's own printer trims the fraction to the
//! last non-zero digit instead, hence the helpers here.
//!
//! People see one form everywhere (tables, messages, errors): [`human`],
//! whole seconds in the local zone with its name, or in UTC under `--utc`.
//! JSON the CLI prints uses [`rfc3339_secs`].

use serde::{Deserialize, Deserializer, Serializer};
use std::sync::atomic::{AtomicBool, Ordering};

pub use jiff::{SignedDuration, Timestamp};

/// Whether [`human`] shows UTC instead of the local zone. Process-wide
/// because library errors and notes render times through `Display`, which
/// takes no arguments; only the CLI sets it, once, from `--utc`.
static PEOPLE_IN_UTC: AtomicBool = AtomicBool::new(false);

/// `--utc`: every time shown to people is shown in UTC from now on.
pub fn show_in_utc(on: bool) {
    PEOPLE_IN_UTC.store(on, Ordering::Relaxed);
}

/// The zone times are shown to people in: UTC under `--utc`, else `TZ`.
pub fn people_zone() -> jiff::tz::TimeZone {
    if PEOPLE_IN_UTC.load(Ordering::Relaxed) {
        jiff::tz::TimeZone::UTC
    } else {
        jiff::tz::TimeZone::system()
    }
}

/// `2026-05-01 12:00:00 CEST`: every time shown to a person (whole
/// seconds, in [`people_zone`]).
pub fn human(t: Timestamp) -> String {
    human_in(t, &people_zone())
}

/// [`human`] in a given zone.
pub fn human_in(t: Timestamp, tz: &jiff::tz::TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// [`human`] of a file time in nanoseconds; empty where it is no instant.
pub fn human_nanos(ns: i64) -> String {
    from_unix_nanos(ns).map(human).unwrap_or_default()
}

/// `n` days of 24 hours.
pub const fn days(n: i64) -> SignedDuration {
    SignedDuration::from_hours(n.saturating_mul(24))
}

/// A standard-library duration as a signed one, the longest one where it
/// does not fit.
pub fn from_std(d: std::time::Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// A file time in nanoseconds as RFC 3339 (with as many fraction digits as
/// it needs, see [`rfc3339`]); empty where it is no instant.
pub fn rfc3339_nanos(ns: i64) -> String {
    from_unix_nanos(ns).map(rfc3339).unwrap_or_default()
}

/// The instant `ns` nanoseconds after the Unix epoch, where it is one.
pub fn from_unix_nanos(ns: i64) -> Option<Timestamp> {
    Timestamp::from_nanosecond(i128::from(ns)).ok()
}

/// Whole seconds since the Unix epoch, rounded down.
pub fn unix_seconds(t: Timestamp) -> i64 {
    let s = t.as_second();
    if t.subsec_nanosecond() < 0 { s - 1 } else { s }
}

/// How many fraction digits the stored form shows: none, 3, 6 or 9.
fn fraction_digits(t: Timestamp) -> usize {
    match t.subsec_nanosecond().unsigned_abs() {
        0 => 0,
        ns if ns % 1_000_000 == 0 => 3,
        ns if ns % 1_000 == 0 => 6,
        _ => 9,
    }
}

/// `2026-05-01T10:00:00.500Z`: every time in stored JSON.
pub fn rfc3339(t: Timestamp) -> String {
    format!("{t:.0$}", fraction_digits(t))
}

/// `2026-05-01T10:00:00Z`: whole seconds (the CLI's JSON, key files).
pub fn rfc3339_secs(t: Timestamp) -> String {
    format!("{t:.0}")
}

/// `2026-05-01T10:00:00.500+00:00`: catalog rows and log fields.
pub fn rfc3339_offset(t: Timestamp) -> String {
    let digits = fraction_digits(t);
    format!("{:.digits$}", t.display_with_offset(jiff::tz::Offset::UTC))
}

/// Reads any RFC 3339 instant (any fraction length, any offset), as the
/// stored forms were always read.
pub fn parse(s: &str) -> Result<Timestamp, jiff::Error> {
    s.parse()
}

/// `#[serde(with = "crate::time::serde_rfc3339")]` for a [`Timestamp`]
/// field, in the stored form ([`rfc3339`]).
pub mod serde_rfc3339 {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&rfc3339(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    /// The same for an `Option<Timestamp>` (`null` when none).
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&rfc3339(*t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
            Option::<std::borrow::Cow<'de, str>>::deserialize(d)?
                .map(|s| parse(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }

    /// The same for a `Vec<Timestamp>`.
    pub mod vec {
        use super::*;

        pub fn serialize<S: Serializer>(ts: &[Timestamp], s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(ts.iter().map(|t| rfc3339(*t)))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Timestamp>, D::Error> {
            Vec::<std::borrow::Cow<'de, str>>::deserialize(d)?
                .iter()
                .map(|s| parse(s).map_err(serde::de::Error::custom))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn stored_form_shows_0_3_6_or_9_fraction_digits() {
        let cases = [
            ("2026-05-01T10:00:00Z", "2026-05-01T10:00:00Z"),
            ("2026-05-01T10:00:00.5Z", "2026-05-01T10:00:00.500Z"),
            ("2026-05-01T10:00:00.0005Z", "2026-05-01T10:00:00.000500Z"),
            (
                "2026-05-01T10:00:00.1234567Z",
                "2026-05-01T10:00:00.123456700Z",
            ),
            ("1969-12-31T23:59:59.5Z", "1969-12-31T23:59:59.500Z"),
        ];
        for (input, want) in cases {
            assert_eq!(rfc3339(t(input)), want, "{input}");
        }
    }

    #[test]
    fn other_forms_follow_the_same_digits() {
        let x = t("2026-05-01T12:00:00.25+02:00");
        assert_eq!(rfc3339_secs(x), "2026-05-01T10:00:00Z");
        assert_eq!(rfc3339_offset(x), "2026-05-01T10:00:00.250+00:00");
        assert_eq!(
            rfc3339_offset(t("2026-05-01T10:00:00Z")),
            "2026-05-01T10:00:00+00:00"
        );
    }

    #[test]
    fn people_see_whole_seconds_with_the_zone_name() {
        let x = t("2026-05-01T10:00:00.999999Z");
        assert_eq!(
            human_in(x, &jiff::tz::TimeZone::UTC),
            "2026-05-01 10:00:00 UTC"
        );
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(human_in(x, &berlin), "2026-05-01 12:00:00 CEST");
        let kolkata = jiff::tz::TimeZone::get("Asia/Kolkata").unwrap();
        assert_eq!(human_in(x, &kolkata), "2026-05-01 15:30:00 IST");
        let shown = human_nanos(1_500_000_000);
        assert!(
            shown.starts_with("1970-01-01 ") && !shown.contains('.'),
            "{shown}"
        );
    }

    #[test]
    fn unix_seconds_round_down_and_nanos_convert() {
        assert_eq!(unix_seconds(t("1970-01-01T00:00:01.9Z")), 1);
        assert_eq!(unix_seconds(t("1969-12-31T23:59:59.5Z")), -1);
        assert_eq!(
            from_unix_nanos(1_500_000_000),
            Some(t("1970-01-01T00:00:01.5Z"))
        );
        assert_eq!(
            from_unix_nanos(i64::MIN).map(rfc3339).as_deref(),
            Some("1677-09-21T00:12:43.145224192Z")
        );
    }

    #[test]
    fn durations_convert_without_overflow() {
        assert_eq!(days(2), SignedDuration::from_hours(48));
        assert_eq!(
            from_std(std::time::Duration::from_millis(1500)).as_millis(),
            1500
        );
        assert_eq!(from_std(std::time::Duration::MAX), SignedDuration::MAX);
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Row {
        #[serde(with = "serde_rfc3339")]
        a: Timestamp,
        #[serde(with = "serde_rfc3339::option")]
        b: Option<Timestamp>,
        #[serde(with = "serde_rfc3339::vec")]
        c: Vec<Timestamp>,
    }

    #[test]
    fn serde_helpers_round_trip_the_stored_form() {
        let json = r#"{"a":"2026-05-01T10:00:00.500Z","b":null,"c":["2026-05-01T10:00:00Z","2026-05-01T10:00:00.000001Z"]}"#;
        let row: Row = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&row).unwrap(), json);
        let other = r#"{"a":"2026-05-01T12:00:00.5+02:00","b":"2026-05-01T10:00:00.1Z","c":[]}"#;
        let row: Row = serde_json::from_str(other).unwrap();
        assert_eq!(row.a, t("2026-05-01T10:00:00.5Z"));
        assert_eq!(
            serde_json::to_value(&row).unwrap()["b"],
            "2026-05-01T10:00:00.100Z"
        );
        assert!(serde_json::from_str::<Row>(r#"{"a":"yesterday","b":null,"c":[]}"#).is_err());
    }
}
