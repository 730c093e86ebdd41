//! `coffer fleet`: every repository under a bucket or folder, as a table,
//! as JSON for dashboards, or as one self-contained HTML page
//! (docs/FLEET.md).

use super::json::{Fleet, FleetRepo, FleetStrip, FleetUnlisted};
use super::{Context, Exit, text, warn};
use crate::engine::fleet::{DEFAULT_DEPTH, FleetOptions, FleetReport, FleetRow, Readers, survey};
use crate::repo::keys::AgentKey;
use crate::repo::store::Store;
use anyhow::{Context as _, Result, anyhow};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct FleetArgs {
    /// Where the repositories are: s3://bucket[/prefix], file:///path or a
    /// path. Each folder holding a `config` object is one repository.
    location: String,
    /// Exit 1 when any repository's last complete snapshot is older than
    /// this (36h, 2d), naming them on stderr.
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    stale: Option<jiff::SignedDuration>,
    /// Also write the fleet as one self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// How many folders deep to look for repositories.
    #[arg(long, default_value_t = DEFAULT_DEPTH, value_name = "N")]
    depth: usize,
}

pub fn run(ctx: &Context, args: FleetArgs) -> Result<Exit> {
    let location = args.location.as_str();
    let store = Store::open(location, &ctx.s3_options())?;
    if !store.exists()? {
        return Err(anyhow!(
            "{location} does not exist (no such bucket or folder): check its name"
        ));
    }
    let readers = Readers {
        operator: ctx
            .identity
            .as_deref()
            .map(|p| ctx.load_identity(p))
            .transpose()?,
        agent: ctx.agent_key.as_deref().map(AgentKey::load).transpose()?,
    };
    let opts = FleetOptions {
        depth: args.depth,
        stale_after: args.stale,
        now: jiff::Timestamp::now(),
    };
    let report = survey(&store, &readers, &opts).with_context(|| {
        format!("{location}: the fleet can not be listed (a credential limited to one repository lists only that one: give its own URL)")
    })?;
    for (folder, why) in &report.unlisted {
        warn(&format!(
            "{}: not listed, repositories there are not shown: {}",
            text::name_str(folder),
            text::message(why)
        ));
    }
    if report.rows.is_empty() {
        return Err(anyhow!(
            "no coffer repositories under {location} (looked {} folders deep for `config` objects)",
            args.depth
        ));
    }
    let shape = shape(&report, &opts);
    if ctx.json {
        super::print_json(&shape)?;
    } else {
        print_table(&report.rows);
    }
    if let Some(file) = &args.html {
        let page = super::fleet_html::page(&shape)?;
        std::fs::write(file, page).with_context(|| format!("cannot write {}", file.display()))?;
    }
    let stale: Vec<&FleetRow> = report.rows.iter().filter(|r| r.stale).collect();
    for r in &stale {
        eprintln!(
            "coffer: stale: {} (last complete snapshot: {})",
            text::name_str(shown(&r.prefix)),
            r.last_complete
                .map_or_else(|| "none".into(), crate::time::rfc3339_secs)
        );
    }
    Ok(if stale.is_empty() {
        Exit::Success
    } else {
        Exit::Failure
    })
}

/// A repository's name in output: its prefix, or `.` for the location itself.
fn shown(prefix: &str) -> &str {
    if prefix.is_empty() { "." } else { prefix }
}

/// The `--json` shape (and the HTML page's embedded data).
fn shape<'a>(report: &'a FleetReport, opts: &FleetOptions) -> Fleet<'a> {
    let time = |t: Option<jiff::Timestamp>| t.map(crate::time::rfc3339_secs);
    Fleet {
        generated: crate::time::rfc3339_secs(opts.now),
        location: &report.location,
        repositories: report
            .rows
            .iter()
            .map(|r| FleetRepo {
                age_seconds: r.age_seconds,
                damage_records: r.damage_records,
                damaged: r.damaged,
                damaged_snapshots: r.damaged_snapshots,
                hosts: r.hosts.as_deref(),
                hosts_sealed: r.id.is_some() && r.hosts.is_none(),
                id: r.id.as_deref(),
                last_complete: time(r.last_complete),
                newest_stored: time(r.newest_stored),
                notes: &r.notes,
                repository: shown(&r.prefix),
                snapshots: r.snapshots,
                stale: r.stale,
                state: r.state.as_str(),
                status_written: time(r.status_written),
                stored_bytes: r.stored_bytes,
                strip: FleetStrip {
                    cells: &r.strip.cells,
                    per_day: r.strip.per_day,
                    start: crate::time::rfc3339_secs(r.strip.start),
                },
            })
            .collect(),
        stale_after_seconds: opts.stale_after.map(|d| d.as_secs()),
        unlisted: report
            .unlisted
            .iter()
            .map(|(folder, reason)| FleetUnlisted { folder, reason })
            .collect(),
    }
}

/// "3d 4h", "5h 2m", "40s": the two largest units.
pub fn age_text(secs: i64) -> String {
    if secs < 0 {
        return "in the future".into();
    }
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (unit, n) in units {
        if rest >= n || (parts.is_empty() && n == 1) {
            parts.push(format!("{}{unit}", rest / n));
            rest %= n;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

/// What the hosts column says: the names, `sealed` where the status holds
/// them for other keys, `-` without a status.
pub fn hosts_text(r: &FleetRow) -> String {
    match (&r.hosts, &r.id) {
        (Some(h), _) => h.join(","),
        (None, Some(_)) => "sealed".into(),
        (None, None) => "-".into(),
    }
}

fn print_table(rows: &[FleetRow]) {
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.state.as_str().to_string(),
                text::name_str(shown(&r.prefix)).into_owned(),
                text::name_str(&hosts_text(r)).into_owned(),
                r.last_complete
                    .map_or_else(|| "-".into(), crate::time::rfc3339_secs),
                r.age_seconds.map_or_else(|| "-".into(), age_text),
                r.snapshots.to_string(),
                r.stored_bytes
                    .map_or_else(|| "-".into(), super::backup::human),
            ]
        })
        .collect();
    let head = [
        "STATE",
        "REPOSITORY",
        "HOSTS",
        "LAST COMPLETE",
        "AGE",
        "SNAPSHOTS",
        "STORED",
    ];
    let mut width = head.map(str::len);
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |row: [&str; 7]| {
        let padded: Vec<String> = row
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(head);
    for (row, r) in cells.iter().zip(rows) {
        line(row.each_ref().map(String::as_str));
        for note in &r.notes {
            println!("    note: {}", text::message(note));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::age_text;

    #[test]
    fn ages_read_in_their_two_largest_units() {
        assert_eq!(age_text(0), "0s");
        assert_eq!(age_text(40), "40s");
        assert_eq!(age_text(3_600 * 5 + 120), "5h 2m");
        assert_eq!(age_text(86_400 * 3 + 3_600 * 4 + 59), "3d 4h");
        assert_eq!(age_text(86_400), "1d");
        assert_eq!(age_text(-5), "in the future");
    }
}
