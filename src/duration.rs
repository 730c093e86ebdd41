//! The one duration grammar, for every flag and profile key that takes a
//! length of time (`keep_within`, `--keep-within`, `--lock-wait`, `grace`,
//! `interval`, `jitter`, hook `timeout`, and the span of `--since "… ago"`):
//! jiff's friendly format, so `90d`, `1h30m`, `1h 30m`, `2 days`, `2w`,
//! `45s` all work. Days are 24 hours and weeks 7 days; months and years are
//! refused, since their length depends on the date.

/// Parses a duration of the grammar above; negative ones are refused.
pub fn parse(s: &str) -> Result<chrono::Duration, String> {
    let t = s.trim();
    let hint = "write it like 30m, 4h, 1h30m, 90d or \"2 days\"";
    let span: jiff::Span = t
        .parse()
        .map_err(|_| format!("{t:?} is not a duration: {hint}"))?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(format!(
            "{t:?}: months and years have no fixed length; give days instead (90d)"
        ));
    }
    let exact = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| format!("{t:?}: {e}"))?;
    if exact.is_negative() {
        return Err(format!("{t:?} is negative: {hint}"));
    }
    chrono::Duration::from_std(exact.unsigned_abs())
        .map_err(|_| format!("{t:?} is longer than any duration coffer can use"))
}

#[cfg(test)]
mod tests {
    use super::parse;
    use chrono::Duration;

    #[test]
    fn every_spelling_of_the_grammar_parses() {
        for (s, want) in [
            ("30s", Duration::seconds(30)),
            ("15m", Duration::minutes(15)),
            ("4h", Duration::hours(4)),
            ("90d", Duration::days(90)),
            ("2w", Duration::weeks(2)),
            ("1h30m", Duration::minutes(90)),
            ("1h 30m", Duration::minutes(90)),
            ("2 days", Duration::days(2)),
            ("1 day 12 hours", Duration::hours(36)),
            (" 100s ", Duration::seconds(100)),
            ("0s", Duration::zero()),
        ] {
            assert_eq!(parse(s), Ok(want), "{s}");
        }
    }

    #[test]
    fn ambiguous_negative_and_malformed_durations_are_refused() {
        for s in [
            "3 months",
            "1y",
            "-5m",
            "5 minutes ago",
            "",
            "90",
            "d",
            "1x",
        ] {
            assert!(parse(s).is_err(), "{s} parsed");
        }
        assert!(parse("1mo").unwrap_err().contains("give days"));
    }
}
