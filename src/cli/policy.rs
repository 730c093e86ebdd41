//! `coffer policy`: the IAM policy of a role, limited to the repository's
//! prefix, and the bucket lifecycle rule that clears what retention let go.

use super::{Context, Exit};
use crate::storage::{Role, iam_policy, lifecycle_rule};
use anyhow::{Result, anyhow};
use clap::Args;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["role", "lifecycle"])))]
pub struct PolicyArgs {
    /// Whose credentials: the agent (backs up, can not delete history or
    /// shorten a lock), the maintainer (retention) or the operator (restore,
    /// recovery).
    #[arg(long, value_enum)]
    role: Option<Role>,
    /// The bucket lifecycle rule for this repository's prefix instead: it
    /// clears versions that retention let go once their lock has ended.
    #[arg(long, conflicts_with = "role")]
    lifecycle: bool,
    /// With --lifecycle: add the rule to the bucket (keeping its other
    /// rules) instead of printing it. Needs s3:PutLifecycleConfiguration.
    #[arg(long, conflicts_with = "role")]
    apply: bool,
}

pub fn run(ctx: &Context, args: PolicyArgs) -> Result<Exit> {
    let url = ctx.repo_url()?;
    let (bucket, prefix) = crate::storage::parse_s3_url(url).map_err(|e| {
        anyhow!("{url}: {e}; policies and lifecycle rules are for an S3 repository (--repo s3://bucket/prefix)")
    })?;
    if args.apply {
        ctx.store()?.apply_lifecycle()?;
        if !ctx.quiet {
            eprintln!(
                "lifecycle rule {} applied to bucket {bucket}",
                crate::storage::s3_lifecycle_id(&prefix)
            );
        }
        return Ok(Exit::Success);
    }
    match args.role {
        Some(role) => super::print_json(&iam_policy(role, &bucket, &prefix))?,
        None => super::print_json(&lifecycle_rule(&prefix))?,
    }
    Ok(Exit::Success)
}
