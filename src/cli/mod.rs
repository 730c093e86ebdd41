//! The command line: raw arguments ([`Cli`]) are resolved against the profile
//! and the environment into a [`Context`]; each command lives in its own module.

mod agent;
mod audit;
mod backup;
mod copy;
mod erase;
mod export;
mod fleet;
mod fleet_html;
mod help;
mod history;
mod inspect;
mod json;
mod keys;
mod policy;
mod progress;
mod repair;
mod restore;
mod select;
mod signal;
pub mod text;
mod undelete;

use crate::catalog::Catalog;
use crate::config::Profile;
use crate::repo::keys::{AgentKey, OperatorIdentity};
use crate::repo::store::Store;
use crate::repo::{RepoError, Repository};
use anyhow::{Result, anyhow};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Exit codes (documented in docs/CLI.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Failure = 1,
    Usage = 2,
    /// A backup finished but could not read some files.
    Partial = 3,
    /// `check` found damage.
    Damaged = 4,
    /// Stopped by SIGINT (Ctrl-C) at a safe point: 128 + 2, as shells report it.
    Interrupted = 130,
    /// Stopped by SIGTERM at a safe point: 128 + 15.
    Terminated = 143,
}

#[derive(Parser, Debug)]
#[command(
    name = "coffer",
    version,
    about = "Encrypted, deduplicating backups (zstd + age) to a local directory or S3",
    after_help = help::COFFER
)]
pub struct Cli {
    /// A backup profile (TOML); command-line flags override it.
    #[arg(long, global = true, help_heading = help::GLOBAL, env = "COFFER_PROFILE")]
    profile: Option<PathBuf>,
    /// Repository URL: s3://bucket/prefix (over TLS), file:///path or a plain path.
    #[arg(long, global = true, help_heading = help::GLOBAL, env = "COFFER_REPO")]
    repo: Option<String>,
    /// The agent key file (written by `init`): writes backups, cannot read them.
    #[arg(long, global = true, help_heading = help::GLOBAL, env = "COFFER_AGENT_KEY")]
    agent_key: Option<PathBuf>,
    /// The operator's age identity file (secret key).
    #[arg(long, global = true, help_heading = help::GLOBAL, env = "COFFER_IDENTITY")]
    identity: Option<PathBuf>,
    /// The local catalog (a cache) to use.
    #[arg(long, global = true, help_heading = help::GLOBAL, env = "COFFER_CATALOG")]
    catalog: Option<PathBuf>,
    /// Machine-readable output on stdout.
    #[arg(long, global = true, help_heading = help::GLOBAL)]
    json: bool,
    /// No progress, tables or summaries: only what the command exists to print, and errors and warnings.
    #[arg(long, short, global = true, help_heading = help::GLOBAL)]
    quiet: bool,
    /// Times for people in UTC (default: the local time zone, from TZ).
    #[arg(long, global = true, help_heading = help::GLOBAL)]
    utc: bool,
    /// Wait this long for another writer's lock (e.g. 10m) instead of failing at once.
    #[arg(long, global = true, help_heading = help::GLOBAL, value_parser = crate::config::parse_duration)]
    lock_wait: Option<jiff::SignedDuration>,
    /// Read the repository as it stood at TIME, from object versions (S3
    /// with versioning): for snapshots, ls, restore, cat, export, find,
    /// diff, check; and the state `undelete` brings back.
    #[arg(long, global = true, help_heading = help::GLOBAL, value_name = "TIME", value_parser = select::at)]
    as_of: Option<jiff::Timestamp>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Operator keys.
    #[command(after_help = help::KEY)]
    Key {
        #[command(subcommand)]
        command: keys::KeyCommand,
    },
    /// Create a repository for one or more operator recipients.
    #[command(after_help = help::INIT)]
    Init(keys::InitArgs),
    /// Back up paths (or the profile's sources).
    #[command(after_help = help::BACKUP)]
    Backup(backup::BackupArgs),
    /// List snapshots (filters, state: complete / verified / damaged).
    #[command(after_help = help::SNAPSHOTS)]
    Snapshots(inspect::SnapshotsArgs),
    /// List the entries of a snapshot.
    #[command(after_help = help::LS)]
    Ls(restore::LsArgs),
    /// Restore a snapshot, or part of it, into a folder or in place.
    #[command(after_help = help::RESTORE)]
    Restore(restore::RestoreArgs),
    /// Write one file of a snapshot to standard output.
    #[command(after_help = help::CAT)]
    Cat(restore::CatArgs),
    /// Write a snapshot, or part of it, as a tar (or tar.zst) archive.
    #[command(after_help = help::EXPORT)]
    Export(export::ExportArgs),
    /// List the versions of matching files across snapshots.
    #[command(after_help = help::FIND)]
    Find(history::FindArgs),
    /// What was added, removed and changed between two snapshots.
    #[command(after_help = help::DIFF)]
    Diff(history::DiffArgs),
    /// Remove files from every snapshot and their data from storage (erasure requests).
    #[command(after_help = help::ERASE)]
    Erase(erase::EraseArgs),
    /// List recorded operator actions: restores, exports, erasures, key exports.
    #[command(after_help = help::AUDIT)]
    Audit(audit::AuditArgs),
    /// Verify the repository.
    #[command(after_help = help::CHECK)]
    Check(inspect::CheckArgs),
    /// Replicate the repository to a second storage (ciphertext only).
    #[command(after_help = help::COPY)]
    Copy(copy::CopyArgs),
    /// The local catalog.
    #[command(after_help = help::CATALOG)]
    Catalog {
        #[command(subcommand)]
        command: inspect::CatalogCommand,
    },
    /// Apply a retention policy: remove snapshots it does not keep (agent key is enough).
    #[command(after_help = help::FORGET)]
    Forget(agent::ForgetArgs),
    /// Delete data no snapshot references (agent key is enough).
    #[command(after_help = help::PRUNE)]
    Prune(agent::PruneArgs),
    /// Repair a damaged repository: index, snapshots, keyring.
    #[command(after_help = help::REPAIR)]
    Repair {
        #[command(subcommand)]
        command: repair::RepairCommand,
    },
    /// Run a profile's whole job now: hooks, backup, retention, prune.
    #[command(after_help = help::RUN)]
    Run(agent::RunArgs),
    /// Run every profile in a folder on its schedule, as a service.
    #[command(after_help = help::AGENT)]
    Agent(agent::AgentArgs),
    /// Per profile: last run, result, next run, snapshots, storage used.
    #[command(after_help = help::STATUS)]
    Status(agent::StatusArgs),
    /// Print the least-privilege IAM policy of a role (agent, maintainer, operator) for an S3 repository.
    #[command(after_help = help::POLICY)]
    Policy(policy::PolicyArgs),
    /// Make the repository as it stood at --as-of TIME current again (after an attack).
    #[command(after_help = help::UNDELETE)]
    Undelete(undelete::UndeleteArgs),
    /// Print a shell completion script on standard output.
    #[command(after_help = help::COMPLETIONS)]
    Completions {
        /// The shell the script is for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page per command (coffer.1, coffer-backup.1, …) into a folder.
    #[command(after_help = help::MAN)]
    Man {
        /// The folder (created if missing), e.g. /usr/local/share/man/man1.
        dir: PathBuf,
    },
    /// Every repository under a bucket: last complete snapshot, age, state (--json, --html FILE, --stale 36h).
    #[command(after_help = help::FLEET)]
    Fleet(fleet::FleetArgs),
}

impl Command {
    /// Whether `--as-of` applies: the commands that only read the
    /// repository, and `undelete`, which brings that state back.
    /// A snapshot named twice, by id and by `--at`, or `diff` not given
    /// two snapshots: a usage error.
    fn at_misuse(&self) -> Option<String> {
        match self {
            Command::Ls(a) => a.at_misuse(),
            Command::Restore(a) => a.at_misuse(),
            Command::Cat(a) => a.at_misuse(),
            Command::Export(a) => a.at_misuse(),
            Command::Diff(a) => a.sides().err(),
            _ => None,
        }
    }

    fn takes_as_of(&self) -> bool {
        matches!(
            self,
            Command::Snapshots(_)
                | Command::Ls(_)
                | Command::Restore(_)
                | Command::Cat(_)
                | Command::Export(_)
                | Command::Find(_)
                | Command::Diff(_)
                | Command::Check(_)
                | Command::Undelete(_)
        )
    }
}

/// A private folder for the throwaway catalog of `--as-of` (the real one
/// caches the current state), removed when the command ends.
#[derive(Default)]
pub struct Scratch(std::sync::OnceLock<PathBuf>);

impl Scratch {
    fn dir(&self) -> Result<PathBuf> {
        if let Some(d) = self.0.get() {
            return Ok(d.clone());
        }
        let dir = std::env::temp_dir().join(format!(
            "coffer-as-of-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
        let _ = self.0.set(dir.clone());
        Ok(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(d) = self.0.get() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Everything a command needs, resolved once.
pub struct Context {
    pub profile: Option<Profile>,
    pub repo_url: Option<String>,
    pub agent_key: Option<PathBuf>,
    pub identity: Option<PathBuf>,
    pub catalog: Option<PathBuf>,
    pub json: bool,
    pub quiet: bool,
    pub lock_wait: std::time::Duration,
    /// `--as-of`: every store this context opens reads the repository as
    /// it stood then, and the catalog is a throwaway one.
    pub as_of: Option<jiff::Timestamp>,
    scratch: Scratch,
    /// The passphrase that opened the identity, kept for the signing key
    /// beside it (same passphrase), so it is asked for once.
    pub passphrase: std::sync::OnceLock<String>,
}

impl Context {
    fn repo_url(&self) -> Result<&str> {
        self.repo_url.as_deref().ok_or_else(|| {
            usage("no repository given: pass --repo URL, set COFFER_REPO, or use --profile")
        })
    }

    /// The repository's storage: as of `--as-of` when given, else now.
    fn store(&self) -> Result<Store> {
        match self.as_of {
            Some(at) => Ok(Store::open_as_of(self.repo_url()?, &self.s3_options(), at)?),
            None => self.current_store(),
        }
    }

    /// The repository's storage as it is now, whatever `--as-of` says.
    fn current_store(&self) -> Result<Store> {
        let url = self.repo_url()?;
        Ok(Store::open(url, &self.s3_options())?)
    }

    /// The store for a new repository under Object Lock: a bucket it
    /// creates gets versioning and Object Lock.
    fn store_with_lock(&self, mode: crate::storage::LockMode) -> Result<Store> {
        let url = self.repo_url()?;
        let mut s3 = self.s3_options();
        s3.object_lock = Some(mode);
        Ok(Store::open(url, &s3)?)
    }

    fn s3_options(&self) -> crate::storage::S3Options {
        self.profile
            .as_ref()
            .map(|p| p.s3.clone())
            .unwrap_or_default()
    }

    fn load_identity(&self, path: &std::path::Path) -> Result<OperatorIdentity> {
        let (identity, passphrase) = OperatorIdentity::load_keeping_passphrase(path, &|| {
            self.passphrase_for(path, "identity")
        })?;
        if let Some(p) = passphrase {
            // Already set only if an identity was loaded before: same file.
            let _ = self.passphrase.set(p);
        }
        Ok(identity)
    }

    /// The passphrase of a protected key file: the one that opened the
    /// identity, COFFER_PASSPHRASE, or a prompt.
    fn passphrase_for(&self, path: &std::path::Path, what: &str) -> Result<String, RepoError> {
        if let Some(p) = self.passphrase.get() {
            return Ok(p.clone());
        }
        if let Ok(p) = std::env::var("COFFER_PASSPHRASE") {
            return Ok(p);
        }
        rpassword::prompt_password(format!("passphrase for {}: ", path.display())).map_err(|e| {
            RepoError::KeyFile {
                path: path.display().to_string(),
                reason: format!("{what} is passphrase-protected and no passphrase could be read ({e}); set COFFER_PASSPHRASE"),
            }
        })
    }

    /// Opens the repository as the operator (identity required).
    pub fn open_operator(&self) -> Result<Repository> {
        let Some(path) = &self.identity else {
            let needs = "this command needs the operator identity: pass --identity FILE or set COFFER_IDENTITY";
            // With the agent key the command line is complete, but the key
            // given can not do this: a refusal, not a usage error.
            return Err(match self.agent_key {
                Some(_) => anyhow!("{needs} (the agent key can write backups but never read them)"),
                None => usage(needs),
            });
        };
        let identity = self.load_identity(path)?;
        let opened = Repository::open_operator(self.store()?, identity.clone());
        match (opened, &self.agent_key) {
            // The keyring and its copy can not be read, but the agent key
            // file holds the same keys: go on with it, and say so.
            (Err(RepoError::Corrupt { object, reason }), Some(agent_path))
                if object.starts_with(crate::repo::KEYRING_KEY) =>
            {
                let agent = AgentKey::load(agent_path)?;
                let repo = Repository::open_with_agent_key(self.store()?, &agent, identity)?;
                warn(&format!(
                    "{object} can not be read ({reason}); using the agent key file {} instead. `coffer repair keyring` writes the keyring again",
                    agent_path.display()
                ));
                Ok(repo)
            }
            (opened, _) => {
                let repo = opened?;
                for w in &repo.warnings {
                    warn(w);
                }
                Ok(repo)
            }
        }
    }

    /// Opens the repository with the identity if given, else the agent key.
    pub fn open_any(&self) -> Result<Repository> {
        if self.identity.is_some() {
            return self.open_operator();
        }
        self.open_agent()
    }

    pub fn open_agent(&self) -> Result<Repository> {
        match &self.agent_key {
            Some(path) => {
                let key = AgentKey::load(path)?;
                Ok(Repository::open_agent(self.store()?, &key)?)
            }
            None if self.identity.is_some() => self.open_operator(),
            None => Err(usage(
                "no key given: pass --agent-key FILE (or --identity FILE), set COFFER_AGENT_KEY, or use --profile",
            )),
        }
    }

    /// The catalog path: flag, profile, then the cache folder.
    pub fn catalog_path(&self, repo: &Repository) -> PathBuf {
        if let Some(p) = &self.catalog {
            return p.clone();
        }
        Catalog::default_path(&repo.config.id)
    }

    /// The catalog; with `--as-of`, a throwaway one in a private folder.
    pub fn open_catalog(&self, repo: &Repository) -> Result<Catalog> {
        let path = match self.as_of {
            Some(_) => self.scratch.dir()?.join("catalog.db"),
            None => self.catalog_path(repo),
        };
        Ok(Catalog::open(&path, &repo.config.id)?)
    }

    pub fn progress(&self) -> progress::Bar {
        progress::Bar::new(!self.quiet && !self.json)
    }
}

/// Renders an error with its causes on one line; control characters (from
/// names in the message) are escaped.
pub fn render_error(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    text::message(&parts.join(": ")).into_owned()
}

/// Adds "; `hint`" to an error whose cause is storage that stayed out
/// through every retry: only where a next run exists (a backup resumes
/// from what it uploaded; an init or a restore has nothing to resume).
pub(crate) fn if_gave_up(e: anyhow::Error, hint: &str) -> anyhow::Error {
    let gave_up = e.chain().any(|c| {
        c.downcast_ref::<crate::storage::StorageError>()
            .is_some_and(|s| s.gave_up())
            || c.downcast_ref::<crate::Error>()
                .is_some_and(|x| x.storage_gave_up())
            || matches!(
                c.downcast_ref::<RepoError>(),
                Some(RepoError::Storage(s)) if s.gave_up()
            )
    });
    if gave_up {
        anyhow!("{}; {hint}", render_error(&e))
    } else {
        e
    }
}

/// A command line that lacks what the command needs (a flag that a
/// profile or the environment could also have given, so clap can not
/// require it), or combines flags that do not go together: found after
/// parsing, it exits 2 as clap's own usage errors do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// A [`UsageError`] as the `anyhow::Error` commands return.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    UsageError(message.into()).into()
}

/// Prints a command's error on stderr and returns its exit code: 130 or
/// 143 for a command a signal stopped, 2 for a usage error, else 1.
pub fn report_failure(e: &anyhow::Error) -> Exit {
    if let Some(stopped) = e.downcast_ref::<signal::Stopped>() {
        eprintln!("coffer: {}", text::message(&stopped.to_string()));
        return stopped.exit();
    }
    eprintln!("coffer: error: {}", render_error(e));
    if e.chain().any(|c| c.is::<UsageError>()) {
        Exit::Usage
    } else {
        Exit::Failure
    }
}

pub fn run() -> Result<Exit> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
            let _ = e.print();
            return Ok(code);
        }
    };
    if let Some(problem) = as_of_misuse(&cli) {
        eprintln!("coffer: error: {problem}");
        return Ok(Exit::Usage);
    }
    // Generated from the definitions alone: no profile, key or repository.
    match &cli.command {
        Command::Completions { shell } => return help::completions(*shell),
        Command::Man { dir } => return help::man_pages(dir),
        _ => {}
    }
    if let Some(problem) = cli.command.at_misuse() {
        eprintln!("coffer: error: {}", text::message(&problem));
        return Ok(Exit::Usage);
    }
    crate::time::show_in_utc(cli.utc);
    let profile = cli.profile.as_deref().map(Profile::load).transpose()?;
    let pick = |flag: Option<PathBuf>, from_profile: Option<&PathBuf>| {
        flag.or_else(|| from_profile.cloned())
    };
    let ctx = Context {
        repo_url: cli
            .repo
            .clone()
            .or_else(|| profile.as_ref().map(|p| p.repository.clone())),
        agent_key: pick(
            cli.agent_key.clone(),
            profile.as_ref().and_then(|p| p.agent_key.as_ref()),
        ),
        identity: pick(
            cli.identity.clone(),
            profile.as_ref().and_then(|p| p.identity.as_ref()),
        ),
        catalog: pick(
            cli.catalog.clone(),
            profile.as_ref().and_then(|p| p.catalog.as_ref()),
        ),
        json: cli.json,
        quiet: cli.quiet,
        as_of: cli.as_of,
        scratch: Scratch::default(),
        passphrase: std::sync::OnceLock::new(),
        lock_wait: cli
            .lock_wait
            .and_then(|d| std::time::Duration::try_from(d).ok())
            .unwrap_or_default(),
        profile,
    };
    match cli.command {
        Command::Key { command } => keys::key(&ctx, command),
        Command::Init(args) => keys::init(&ctx, args),
        Command::Backup(args) => backup::run(&ctx, args),
        Command::Snapshots(args) => inspect::snapshots(&ctx, args),
        Command::Ls(args) => restore::ls(&ctx, args),
        Command::Restore(args) => restore::restore(&ctx, args),
        Command::Cat(args) => restore::cat(&ctx, args),
        Command::Export(args) => export::export(&ctx, args),
        Command::Find(args) => history::find(&ctx, args),
        Command::Diff(args) => history::diff(&ctx, args),
        Command::Erase(args) => erase::run(&ctx, args),
        Command::Audit(args) => audit::run(&ctx, args),
        Command::Check(args) => inspect::check(&ctx, args),
        Command::Copy(args) => copy::run(&ctx, args),
        Command::Catalog { command } => inspect::catalog(&ctx, command),
        Command::Forget(args) => agent::forget_cmd(&ctx, args),
        Command::Prune(args) => agent::prune_cmd(&ctx, args),
        Command::Repair { command } => repair::run(&ctx, command),
        Command::Run(args) => agent::run(&ctx, args),
        Command::Agent(args) => agent::agent(&ctx, args),
        Command::Status(args) => agent::status(&ctx, args),
        Command::Policy(args) => policy::run(&ctx, args),
        Command::Undelete(args) => undelete::run(&ctx, args),
        // Answered above, before the profile was read.
        Command::Completions { .. } | Command::Man { .. } => Ok(Exit::Success),
        Command::Fleet(args) => fleet::run(&ctx, args),
    }
}

/// What is wrong with `--as-of` on this command line, if anything: it
/// only goes with the reading commands and `undelete`, which needs it.
fn as_of_misuse(cli: &Cli) -> Option<&'static str> {
    match (&cli.command, cli.as_of) {
        (Command::Undelete(_), None) => {
            Some("undelete needs --as-of TIME: the time whose state to bring back")
        }
        (c, Some(_)) if !c.takes_as_of() => Some(
            "--as-of reads the repository as it stood then and writes nothing: only snapshots, ls, restore, cat, export, find, diff, check and undelete take it",
        ),
        _ => None,
    }
}

/// Tells the operator on stderr about something coffer skipped or guessed.
pub(crate) fn warn(message: &str) {
    eprintln!("coffer: warning: {message}");
}

/// Prints a JSON value on stdout.
fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn at_names_a_snapshot_once_and_diff_takes_two_sides() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            super::Cli::try_parse_from(std::iter::once("coffer").chain(args.iter().copied()))
                .unwrap()
        };
        let misuse = |args: &[&str]| parse(args).command.at_misuse();
        for ok in [
            &["cat", "--at", "now", "srv/f"][..],
            &["cat", "latest", "srv/f", "--at", "now"],
            &["cat", "1a2b3c4d", "srv/f"],
            &["ls", "--at", "now"],
            &["restore", "--at", "now", "--target", "t"],
            &["export", "latest", "--at", "now"],
            &["diff", "a1b2", "c3d4"],
            &["diff", "a1b2", "--at", "now"],
            &["diff", "--at", "3h ago", "--at", "now"],
        ] {
            assert_eq!(misuse(ok), None, "{ok:?}");
        }
        for bad in [
            &["cat", "1a2b3c4d", "srv/f", "--at", "now"][..],
            &["ls", "1a2b", "--at", "now"],
            &["restore", "1a2b", "--at", "now", "--target", "t"],
            &["export", "1a2b", "--at", "now"],
            &["diff", "a1b2"],
            &["diff", "--at", "now"],
            &["diff", "a1b2", "c3d4", "--at", "now"],
        ] {
            assert!(misuse(bad).is_some(), "{bad:?} passes");
        }
        // The sides of a diff: SNAPSHOTs first, then the --at times, in order.
        let super::Command::Diff(d) =
            parse(&["diff", "--at", "2026-01-01T00:00:00Z", "a1b2"]).command
        else {
            panic!("not a diff")
        };
        let [from, to] = d.sides().unwrap();
        assert_eq!(from, (Some("a1b2"), None));
        assert_eq!(
            to.1.map(|t| t.to_string()).as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        let super::Command::Cat(c) = parse(&["cat", "srv/f"]).command else {
            panic!("not a cat")
        };
        assert_eq!(c.at_misuse(), None);
    }

    #[test]
    fn as_of_goes_with_reading_commands_and_undelete_needs_it() {
        use clap::Parser;
        let misuse = |args: &[&str]| {
            let cli =
                super::Cli::try_parse_from(std::iter::once("coffer").chain(args.iter().copied()))
                    .unwrap();
            super::as_of_misuse(&cli)
        };
        for ok in [
            &["snapshots", "--as-of", "3h ago"][..],
            &[
                "--as-of",
                "2026-12-01 10:00",
                "restore",
                "latest",
                "--target",
                "t",
            ],
            &["cat", "latest", "a", "--as-of", "now"],
            &["check", "--as-of", "now"],
            &["undelete", "--as-of", "now", "--dry-run"],
            &["backup", "src"],
            &["snapshots"],
        ] {
            assert_eq!(misuse(ok), None, "{ok:?}");
        }
        for (bad, says) in [
            (&["backup", "src", "--as-of", "now"][..], "--as-of reads"),
            (&["forget", "--as-of", "now"], "--as-of reads"),
            (&["prune", "--as-of", "now"], "--as-of reads"),
            (&["undelete"], "undelete needs --as-of"),
        ] {
            let m = misuse(bad).unwrap_or_else(|| panic!("{bad:?} passes"));
            assert!(m.contains(says), "{bad:?}: {m}");
        }
    }
}
