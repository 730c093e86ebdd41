//! The one duration grammar, for every flag and profile key that takes a
//! length of time (`keep_within`, `--keep-within`, `--lock-wait`, `grace`,
//! `interval`, `jitter`, hook `timeout`, and the span of `--since "… ago"`):
//! jiff's friendly format, so `90d`, `1h30m`, `1h 30m`, `2 days`, `2w`,
//! `45s` all work. Days are 24 hours and weeks 7 days; months and years are
//! refused, since their length depends on the date.

/// Parses a duration of the grammar above; negative ones are refused.
pub fn parse(s: &str) -> Result<jiff::SignedDuration, String> {
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
    Ok(exact)
}

#[cfg(test)]
mod tests {
    use super::parse;
    use jiff::SignedDuration;

    #[test]
    fn every_spelling_of_the_grammar_parses() {
        for (s, want) in [
            ("30s", SignedDuration::from_secs(30)),
            ("15m", SignedDuration::from_mins(15)),
            ("4h", SignedDuration::from_hours(4)),
            ("90d", crate::time::days(90)),
            ("2w", crate::time::days(14)),
            ("1h30m", SignedDuration::from_mins(90)),
            ("1h 30m", SignedDuration::from_mins(90)),
            ("2 days", crate::time::days(2)),
            ("1 day 12 hours", SignedDuration::from_hours(36)),
            (" 100s ", SignedDuration::from_secs(100)),
            ("0s", SignedDuration::ZERO),
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
