//! `coffer key …` and `coffer init`.

use super::{Context, Exit, print_json};
use crate::repo::LockConfig;
use crate::repo::Repository;
use crate::repo::chunker::ChunkerParams;
use crate::repo::keys::{
    OperatorIdentity, SigningKey, TrustedSigners, signers_path, signing_key_path,
};
use anyhow::{Context as _, Result, anyhow};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Write a new operator identity and its signing key beside it
    /// (IDENTITY.sign, both mode 0600) and print its recipient.
    #[command(after_help = super::help::KEY_GENERATE)]
    Generate {
        /// Where to write the identity (refused if it or OUTPUT.sign exists).
        #[arg(long, short)]
        output: PathBuf,
        /// Protect it with a passphrase (COFFER_PASSPHRASE or a prompt).
        #[arg(long)]
        passphrase: bool,
    },
    /// Print the recipient (public key) of an identity.
    #[command(after_help = super::help::KEY_RECIPIENT)]
    Recipient,
    /// Write a signing key beside an existing identity (IDENTITY.sign, mode
    /// 0600; the identity's passphrase protects it too) and print its public key.
    #[command(after_help = super::help::KEY_ADD_SIGNING)]
    AddSigning,
    /// Print the public signing key of an identity, as a line for another
    /// operator's IDENTITY.signers file.
    #[command(after_help = super::help::KEY_SIGNER)]
    Signer,
    /// Write the agent key file from the repository's keyring (operator).
    #[command(after_help = super::help::KEY_EXPORT_AGENT)]
    ExportAgent {
        /// Where to write the agent key file (mode 0600; refused if it exists).
        #[arg(long, short)]
        output: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// An operator recipient (age1…); repeat for several operators.
    #[arg(long = "recipient", short = 'r')]
    recipients: Vec<String>,
    /// Create the bucket if it does not exist (S3).
    #[arg(long)]
    create_bucket: bool,
    /// Average chunk size in KiB (min a quarter, max four times). Smaller
    /// chunks store less after small in-place changes (databases), at more
    /// blobs per GiB. Fixed for the repository's life.
    #[arg(long, default_value_t = (ChunkerParams::DATA.avg / 1024) as u32,
          value_parser = clap::value_parser!(u32).range(64..=4096))]
    chunk_avg_kib: u32,
    /// Keep the history under S3 Object Lock in this mode (default: the
    /// profile's `[s3] object_lock`): a compromised server can then not
    /// delete or shorten it. Needs a bucket with Object Lock (`--create-bucket`
    /// makes one). See docs/IMMUTABILITY.md.
    #[arg(long, value_enum)]
    object_lock: Option<crate::storage::LockMode>,
    /// The history every lock covers, e.g. 90d (default: the profile's
    /// `keep_within`, else 90 days); locks reach 30 days past it.
    #[arg(long, value_parser = crate::duration::parse, requires = "object_lock")]
    lock_window: Option<jiff::SignedDuration>,
}

fn read_passphrase() -> Result<String> {
    if let Ok(p) = std::env::var("COFFER_PASSPHRASE") {
        return Ok(p);
    }
    let a = rpassword::prompt_password("new passphrase: ")
        .context("cannot read a passphrase; set COFFER_PASSPHRASE")?;
    let b = rpassword::prompt_password("again: ").context("cannot read a passphrase")?;
    if a != b {
        return Err(anyhow!("the passphrases differ"));
    }
    if a.is_empty() {
        return Err(anyhow!("empty passphrase"));
    }
    Ok(a)
}

pub fn key(ctx: &Context, cmd: KeyCommand) -> Result<Exit> {
    match cmd {
        KeyCommand::Generate { output, passphrase } => {
            let pass = if passphrase {
                Some(read_passphrase()?)
            } else {
                None
            };
            let (recipient, signer) = OperatorIdentity::generate_with_signing_key(&output, pass)?;
            let signing_key = signing_key_path(&output);
            if ctx.json {
                print_json(&super::json::KeyGenerated {
                    identity: &output,
                    recipient: recipient.to_string(),
                    signer: signer.to_string(),
                    signing_key: &signing_key,
                })?;
            } else {
                println!("{recipient}");
                if !ctx.quiet {
                    eprintln!(
                        "identity written to {} (mode 0600). Keep it offline; give the line above to `coffer init --recipient`.",
                        output.display()
                    );
                    eprintln!(
                        "signing key written to {} (mode 0600): keep it beside the identity; it signs your audit events ({signer})",
                        signing_key.display()
                    );
                }
            }
        }
        KeyCommand::AddSigning => add_signing(ctx)?,
        KeyCommand::Signer => {
            let path = ctx
                .identity
                .as_ref()
                .ok_or_else(|| super::usage("pass --identity FILE"))?;
            let key = ctx.signing_key()?.ok_or_else(|| {
                anyhow!(
                    "{}: no signing key beside the identity; create one with `coffer key add-signing --identity {}`",
                    signing_key_path(path).display(),
                    path.display()
                )
            })?;
            println!("{}", key.public());
        }
        KeyCommand::Recipient => {
            let path = ctx
                .identity
                .as_ref()
                .ok_or_else(|| super::usage("pass --identity FILE"))?;
            for id in ctx.load_identity(path)?.identities {
                println!("{}", id.to_public());
            }
        }
        KeyCommand::ExportAgent { output } => {
            let repo = ctx.open_operator()?;
            let key = repo
                .agent_key()
                .ok_or_else(|| anyhow!("keyring holds no agent key"))?;
            key.save(&output)?;
            match ctx.open_catalog(&repo) {
                Ok(catalog) => super::audit::record(
                    ctx,
                    &repo,
                    &catalog,
                    "key-export",
                    &format!("agent key written to {}", output.display()),
                ),
                Err(e) => eprintln!(
                    "coffer: warning: the key export was not recorded in the audit log: {e:#}"
                ),
            }
            eprintln!("agent key written to {} (mode 0600)", output.display());
        }
    }
    Ok(Exit::Success)
}

/// `key add-signing`: a signing key for an identity made before signing.
fn add_signing(ctx: &Context) -> Result<()> {
    let path = ctx.identity.as_ref().ok_or_else(|| {
        super::usage("pass --identity FILE: the identity to add a signing key to")
    })?;
    let signing_key = signing_key_path(path);
    if signing_key.symlink_metadata().is_ok() {
        return Err(anyhow!(
            "{}: a signing key exists already; refusing to overwrite it (its events would no longer verify). Move it away first to replace it",
            signing_key.display()
        ));
    }
    // Loading proves the identity (and its passphrase), which protects the new key too.
    ctx.load_identity(path)?;
    let key = SigningKey::generate();
    key.save(&signing_key, ctx.passphrase.get().map(String::as_str))?;
    if ctx.json {
        print_json(&super::json::SigningKeyAdded {
            identity: path,
            signer: key.public().to_string(),
            signing_key: &signing_key,
        })?;
    } else {
        println!("{}", key.public());
        if !ctx.quiet {
            eprintln!(
                "signing key written to {} (mode 0600{}): keep it beside the identity; your audit events are signed from now on",
                signing_key.display(),
                if ctx.passphrase.get().is_some() {
                    ", protected with the identity's passphrase"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

impl Context {
    /// The signing key beside the identity; `None` if there is none (or no
    /// identity was given). A protected one opens with the identity's passphrase.
    pub(super) fn signing_key(&self) -> Result<Option<SigningKey>> {
        let Some(identity) = &self.identity else {
            return Ok(None);
        };
        let path = signing_key_path(identity);
        Ok(SigningKey::load(&path, &|| {
            self.passphrase_for(&path, "signing key")
        })?)
    }

    /// The signing keys whose events this reader takes as an operator's: its
    /// own and those in IDENTITY.signers.
    pub(super) fn trusted_signers(&self) -> Result<TrustedSigners> {
        let Some(identity) = &self.identity else {
            return Ok(TrustedSigners::default());
        };
        let own = self.signing_key()?.map(|k| k.public());
        if own.is_none() && !self.quiet && !signers_path(identity).exists() {
            super::warn(&format!(
                "no signing key beside {}: no audit event can show as yours; create one with `coffer key add-signing --identity {}`",
                identity.display(),
                identity.display()
            ));
        }
        Ok(TrustedSigners::load(identity, own)?)
    }
}

/// The lock a new repository asks for: the flag, else the profile's
/// `[s3] object_lock`; refused where storage can not keep one.
fn lock_config(ctx: &Context, args: &InitArgs, url: &str) -> Result<Option<LockConfig>> {
    let profile = ctx.profile.as_ref();
    let Some(mode) = args
        .object_lock
        .or_else(|| profile.and_then(|p| p.s3.object_lock))
    else {
        return Ok(None);
    };
    if !url.starts_with("s3://") {
        return Err(anyhow!(
            "{url}: Object Lock needs S3 storage with Object Lock; a local folder can not keep history from a compromised server (drop --object-lock, or use an s3:// bucket: docs/IMMUTABILITY.md)"
        ));
    }
    let window = args
        .lock_window
        .or_else(|| profile.map(|p| p.retention.keep_within))
        .unwrap_or(crate::config::Retention::default().keep_within);
    // Whole days, rounded up: the lock must cover all of the window.
    let days = (window.as_secs().max(1) as u64).div_ceil(86_400);
    let window_days = u32::try_from(days)
        .ok()
        .filter(|d| *d <= 3650)
        .ok_or_else(|| anyhow!("--lock-window {days} days: choose at most 3650 days"))?;
    Ok(Some(LockConfig {
        mode,
        window_days,
        margin_days: crate::repo::LOCK_MARGIN_DAYS,
    }))
}

/// A bucket without Object Lock can not get it later: say so before
/// anything is written.
fn check_bucket_lock(store: &crate::repo::store::Store, url: &str) -> Result<()> {
    match store.object_lock()?.as_deref() {
        Some("off") => Err(anyhow!(
            "{url}: the bucket has no Object Lock, and it can only be turned on when a bucket is created: create one with `coffer init --create-bucket --object-lock MODE` (a new bucket name), or in your provider's console"
        )),
        Some(s) if s.starts_with("unknown") => {
            eprintln!(
                "coffer: warning: {url}: could not read the bucket's Object Lock setting ({s}); the first locked write will tell"
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

pub fn init(ctx: &Context, args: InitArgs) -> Result<Exit> {
    let recipients = args
        .recipients
        .iter()
        .map(|r| {
            age::x25519::Recipient::from_str(r.trim()).map_err(|e| {
                anyhow!("recipient {r:?} is not an age X25519 public key (age1…): {e}")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if recipients.is_empty() {
        return Err(super::usage(
            "init needs at least one --recipient age1…; create one with `coffer key generate --output operator.key`",
        ));
    }
    let agent_key_path = ctx
        .agent_key
        .clone()
        .ok_or_else(|| super::usage("init writes the agent key file: pass --agent-key FILE"))?;
    if agent_key_path.exists() {
        return Err(anyhow!(
            "{} already exists; refusing to overwrite a key (choose another --agent-key path)",
            agent_key_path.display()
        ));
    }
    let url = ctx.repo_url()?;
    let lock = lock_config(ctx, &args, url)?;
    let store = match lock {
        Some(l) => ctx.store_with_lock(l.mode)?,
        None => ctx.store()?,
    };
    if !store.exists()? {
        if args.create_bucket || !url.starts_with("s3://") {
            store.create_location()?;
        } else {
            return Err(anyhow!(
                "{url}: the bucket does not exist; create it, or pass --create-bucket"
            ));
        }
    }
    if lock.is_some() {
        check_bucket_lock(&store, url)?;
    }
    let avg = (args.chunk_avg_kib as usize * 1024) & !1;
    let (repo, agent, caps) =
        Repository::init(store, recipients, ChunkerParams::with_avg(avg), lock)?;
    agent.save(&agent_key_path)?;
    if ctx.json {
        print_json(&super::json::Initialized {
            agent_key: &agent_key_path,
            capabilities: super::json::sorted(&caps)?,
            id: &repo.config.id,
            repository: repo.store.location(),
        })?;
    } else if !ctx.quiet {
        eprintln!(
            "created repository {} at {}\nagent key written to {} (mode 0600): it can write backups, not read them\nstorage: {}",
            repo.config.id,
            repo.store.location(),
            agent_key_path.display(),
            caps.summary()
        );
    }
    Ok(Exit::Success)
}
