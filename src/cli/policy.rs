//! `coffer policy`: the IAM policy of a role, limited to the repository's prefix.

use super::{Context, Exit};
use crate::storage::{Role, iam_policy};
use anyhow::{Result, anyhow};
use clap::Args;

#[derive(Args, Debug)]
pub struct PolicyArgs {
    /// Whose credentials: the agent (backs up, can not delete history or
    /// shorten a lock), the maintainer (retention) or the operator (restore,
    /// recovery).
    #[arg(long, value_enum)]
    role: Role,
}

pub fn run(ctx: &Context, args: PolicyArgs) -> Result<Exit> {
    let url = ctx.repo_url()?;
    let (bucket, prefix) = crate::storage::parse_s3_url(url).map_err(|e| {
        anyhow!("{url}: {e}; an IAM policy is for an S3 repository (--repo s3://bucket/prefix)")
    })?;
    super::print_json(&iam_policy(args.role, &bucket, &prefix))?;
    Ok(Exit::Success)
}
