//! The command-line side of choosing snapshots: the filter flags, and the
//! warnings a choice brings. The choosing itself is
//! [`crate::engine::select`]; times are read as its docs say.

use super::Context;
use crate::engine::select::{Filter, since, until};
pub use crate::engine::select::{View, at, parse_when};
use anyhow::Result;
use clap::Args;
use jiff::Timestamp;

#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host.
    #[arg(long)]
    pub host: Option<String>,
    /// Only snapshots made by this profile (name; `--profile` is the profile file).
    #[arg(long)]
    pub profile_name: Option<String>,
    /// Only snapshots whose sources include this path (or a folder above it).
    #[arg(long = "path", id = "source_path")]
    pub path: Option<String>,
    /// Only snapshots at or after this time.
    #[arg(long, value_parser = since)]
    pub since: Option<Timestamp>,
    /// Only snapshots at or before this time.
    #[arg(long, value_parser = until)]
    pub until: Option<Timestamp>,
}

impl FilterArgs {
    pub fn filter(&self) -> Filter {
        Filter {
            host: self.host.clone(),
            profile_name: self.profile_name.clone(),
            path: self.path.clone(),
            since: self.since,
            until: self.until,
        }
    }
}

/// What is wrong with naming a snapshot by id and by `--at` at once (one
/// would silently win over the other); `latest` goes with `--at`: the
/// newest at that time.
pub fn at_misuse(spec: Option<&str>, at: bool) -> Option<String> {
    match spec {
        Some(s) if at && s != "latest" => Some(format!(
            "snapshot {s:?} and --at both name the snapshot: give an id or --at TIME, not both"
        )),
        _ => None,
    }
}

/// Opens the repository as the operator and syncs the catalog with it.
/// Objects that can not be read are named on stderr and skipped.
pub fn open_view(ctx: &Context, filter: &FilterArgs) -> Result<View> {
    let repo = ctx.open_operator()?;
    let catalog = ctx.open_catalog(&repo)?;
    let (view, warnings) = View::open(repo, catalog, &filter.filter())?;
    for w in &warnings {
        super::warn(w);
    }
    Ok(view)
}

/// Opens the view and chooses one snapshot ([`View::open_one`]: with a
/// cold catalog, only the snapshots that decide are read); warnings and
/// notes go to stderr as [`pick`] sends them.
pub fn open_one(
    ctx: &Context,
    filter: &FilterArgs,
    choice: (Option<&str>, Option<Timestamp>),
    hint: &str,
) -> Result<(View, usize)> {
    let repo = ctx.open_operator()?;
    let catalog = ctx.open_catalog(&repo)?;
    let (view, choice, warnings) = View::open_one(repo, catalog, &filter.filter(), choice)?;
    for w in &warnings {
        super::warn(w);
    }
    tell(&choice, hint);
    Ok((view, choice.index))
}

/// The view over the whole history, for a search of older snapshots
/// ([`View::whole`]); `index` follows the chosen snapshot.
pub fn whole(view: View, filter: &FilterArgs, index: usize) -> Result<(View, usize)> {
    let (view, index, warnings) = view.whole(&filter.filter(), index)?;
    for w in &warnings {
        super::warn(w);
    }
    Ok((view, index))
}

/// What the operator should hear about a choice, one line each on stderr,
/// those about damage ending in `hint`.
fn tell(choice: &crate::engine::select::Choice, hint: &str) {
    for note in &choice.notes {
        let hint = if note.is_damage() { hint } else { "" };
        super::warn(&super::text::message(&format!("{note}{hint}")));
    }
}

/// Chooses one snapshot as [`View::pick`] does; what the operator should
/// hear about the choice goes to stderr, one line each, those about damage
/// ending in `hint`. Returns its place in [`View::snaps`].
pub fn pick(view: &View, spec: Option<&str>, at: Option<Timestamp>, hint: &str) -> Result<usize> {
    let choice = view.pick(spec, at)?;
    tell(&choice, hint);
    Ok(choice.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_and_at_together_are_refused_latest_and_at_are_not() {
        assert_eq!(at_misuse(Some("latest"), true), None);
        assert_eq!(at_misuse(None, true), None);
        assert_eq!(at_misuse(Some("1a2b3c4d"), false), None);
        let m = at_misuse(Some("1a2b3c4d"), true).unwrap_or_default();
        assert!(m.contains("\"1a2b3c4d\" and --at"), "{m}");
    }
}
