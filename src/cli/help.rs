//! What `--help` shows beyond one line per flag: the examples under each
//! command, the heading that keeps the global flags apart, and what is
//! generated from the same definitions: shell completions (`coffer
//! completions`) and man pages (`coffer man`).
//!
//! The examples are real invocations: a test runs each through the parser
//! and checks it reaches the command it is listed under.

use super::{Cli, Exit};
use anyhow::{Context as _, Result};
use clap::CommandFactory;
use std::path::Path;

/// The help heading of the flags every command takes.
pub(super) const GLOBAL: &str = "Global options";

/// A recipient (public key) for examples; any `age1…` works the same.
macro_rules! recipient {
    () => {
        "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"
    };
}

pub(super) const COFFER: &str = concat!(
    "Examples:
  coffer key generate --output operator.key
  coffer init --repo s3://acme-backups/web-1 --recipient ",
    recipient!(),
    " --agent-key /etc/coffer/keys/web-1.agent.key
  coffer backup --profile /etc/coffer/profiles/web-1.toml
  coffer restore latest --profile /etc/coffer/profiles/web-1.toml --identity operator.key --target /tmp/restore"
);

pub(super) const KEY: &str = "Examples:
  coffer key generate --output operator.key --passphrase
  coffer key recipient --identity operator.key
  coffer key export-agent --repo s3://acme-backups/web-1 --identity operator.key --output web-1.agent.key";

pub(super) const KEY_GENERATE: &str = "Examples:
  coffer key generate --output operator.key
  coffer key generate -o /media/usb/operator.key --passphrase";

pub(super) const KEY_RECIPIENT: &str = "Examples:
  coffer key recipient --identity operator.key
  coffer key recipient --identity /media/usb/operator.key";

pub(super) const KEY_ADD_SIGNING: &str = "Examples:
  coffer key add-signing --identity operator.key
  coffer key add-signing --identity /media/usb/operator.key";

pub(super) const KEY_SIGNER: &str = "Examples:
  coffer key signer --identity operator.key
  coffer key signer --identity operator.key >> colleague.key.signers";

pub(super) const KEY_EXPORT_AGENT: &str = "Examples:
  coffer key export-agent --repo s3://acme-backups/web-1 --identity operator.key --output web-1.agent.key
  coffer key export-agent --profile /etc/coffer/profiles/web-1.toml --identity operator.key -o /etc/coffer/keys/web-1.agent.key";

pub(super) const INIT: &str = concat!(
    "Examples:
  coffer init --repo /srv/backup/web-1 --recipient ",
    recipient!(),
    " --agent-key web-1.agent.key
  coffer init --repo s3://acme-backups/web-1 --create-bucket -r ",
    recipient!(),
    " --agent-key /etc/coffer/keys/web-1.agent.key
  coffer init --repo s3://acme-locked/web-1 --create-bucket --object-lock governance --lock-window 90d -r ",
    recipient!(),
    " --agent-key /etc/coffer/keys/web-1.agent.key"
);

pub(super) const BACKUP: &str = "Examples:
  coffer backup --profile /etc/coffer/profiles/web-1.toml
  coffer backup /etc /srv/www --exclude '*.log' --exclude 'srv/www/cache' --repo s3://acme-backups/web-1 --agent-key web-1.agent.key
  coffer backup /home --compression 9 --profile /etc/coffer/profiles/home.toml";

pub(super) const SNAPSHOTS: &str = "Examples:
  coffer snapshots --profile /etc/coffer/profiles/web-1.toml
  coffer snapshots --repo s3://acme-backups/web-1 --identity operator.key --host web-1 --since '7 days ago'
  coffer snapshots --repo /srv/backup/web-1 --agent-key web-1.agent.key --utc --json";

pub(super) const LS: &str = "Examples:
  coffer ls latest srv/www --repo s3://acme-backups/web-1 --identity operator.key
  coffer ls --at '2026-11-20 14:00' --host web-1 --repo s3://acme-backups/web-1 --identity operator.key";

pub(super) const RESTORE: &str = "Examples:
  coffer restore latest --target /tmp/restore --repo s3://acme-backups/web-1 --identity operator.key
  coffer restore --at '2026-11-20 14:00' --include 'srv/www/**' --in-place --dry-run --profile /etc/coffer/profiles/web-1.toml --identity operator.key
  coffer restore 1a2b3c4d --target /tmp/restore --overwrite never --verify --fallback --profile /etc/coffer/profiles/web-1.toml --identity operator.key";

pub(super) const CAT: &str = "Examples:
  coffer cat latest etc/nginx/nginx.conf --repo s3://acme-backups/web-1 --identity operator.key
  coffer cat srv/db/dump.sql --at '2 days ago' --profile /etc/coffer/profiles/web-1.toml --identity operator.key > dump.sql";

pub(super) const EXPORT: &str = "Examples:
  coffer export latest --output web-1.tar.zst --repo s3://acme-backups/web-1 --identity operator.key
  coffer export 1a2b3c4d --include 'home/alice' -o alice.tar --profile /etc/coffer/profiles/home.toml --identity operator.key
  coffer export latest --profile /etc/coffer/profiles/web-1.toml --identity operator.key | tar -tvf -";

pub(super) const FLEET: &str = "Examples:
  coffer fleet s3://acme-backups --stale 36h
  coffer fleet s3://acme-backups/eu --identity operator.key --html /var/www/fleet.html
  coffer fleet s3://acme-backups --json --depth 2";

pub(super) const FIND: &str = "Examples:
  coffer find '*.docx' --repo s3://acme-backups/files-1 --identity operator.key
  coffer find 'srv/www/**/index.php' --since '30 days ago' --json --profile /etc/coffer/profiles/web-1.toml --identity operator.key";

pub(super) const DIFF: &str = "Examples:
  coffer diff 1a2b3c4d latest --repo s3://acme-backups/web-1 --identity operator.key
  coffer diff 1a2b 5e6f --json --profile /etc/coffer/profiles/web-1.toml --identity operator.key
  coffer diff --at '2026-11-01' --at '2026-11-20 14:00' --profile /etc/coffer/profiles/web-1.toml --identity operator.key";

pub(super) const ERASE: &str = "Examples:
  coffer erase --path 'home/alice' --dry-run --repo s3://acme-backups/files-1 --identity operator.key
  coffer erase --path 'srv/crm/exports/customer-4711.csv' --path 'srv/crm/mail/customer-4711' --profile /etc/coffer/profiles/crm.toml --identity operator.key";

pub(super) const AUDIT: &str = "Examples:
  coffer audit --repo s3://acme-backups/web-1 --identity operator.key
  coffer audit --since '30 days ago' --json --profile /etc/coffer/profiles/web-1.toml --identity operator.key";

pub(super) const CHECK: &str = "Examples:
  coffer check --profile /etc/coffer/profiles/web-1.toml
  coffer check --read-data --repo s3://acme-backups/web-1 --identity operator.key
  coffer check --as-of '2026-11-20 14:00' --repo s3://acme-backups/web-1 --identity operator.key";

pub(super) const COPY: &str = "Examples:
  coffer copy --to s3://acme-offsite/web-1 --profile /etc/coffer/profiles/web-1.toml
  coffer copy --to /mnt/usb/web-1 --repo s3://acme-backups/web-1 --agent-key web-1.agent.key";

pub(super) const CATALOG: &str = "Examples:
  coffer catalog rebuild --profile /etc/coffer/profiles/web-1.toml
  coffer catalog rebuild --repo s3://acme-backups/web-1 --identity operator.key";

pub(super) const CATALOG_REBUILD: &str = CATALOG;

pub(super) const FORGET: &str = "Examples:
  coffer forget --dry-run --profile /etc/coffer/profiles/web-1.toml
  coffer forget --keep-within 30d --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --prune --profile /etc/coffer/profiles/web-1.toml
  coffer forget --all --keep-last 10 --repo s3://acme-backups/web-1 --agent-key web-1.agent.key";

pub(super) const PRUNE: &str = "Examples:
  coffer prune --dry-run --profile /etc/coffer/profiles/web-1.toml
  coffer prune --max-unused 10 --grace 6h --repo s3://acme-backups/web-1 --agent-key web-1.agent.key";

pub(super) const REPAIR: &str = "Examples:
  coffer repair index --dry-run --profile /etc/coffer/profiles/web-1.toml
  coffer repair snapshots --forget --repo s3://acme-backups/web-1 --identity operator.key
  coffer repair keyring --repo s3://acme-backups/web-1 --agent-key web-1.agent.key";

pub(super) const REPAIR_INDEX: &str = "Examples:
  coffer repair index --dry-run --profile /etc/coffer/profiles/web-1.toml
  coffer repair index --repo s3://acme-backups/web-1 --agent-key web-1.agent.key --json";

pub(super) const REPAIR_SNAPSHOTS: &str = "Examples:
  coffer repair snapshots --dry-run --repo s3://acme-backups/web-1 --identity operator.key
  coffer repair snapshots --forget --profile /etc/coffer/profiles/web-1.toml --identity operator.key";

pub(super) const REPAIR_KEYRING: &str = "Examples:
  coffer repair keyring --dry-run --profile /etc/coffer/profiles/web-1.toml
  coffer repair keyring --repo s3://acme-backups/web-1 --agent-key web-1.agent.key";

pub(super) const RUN: &str = "Examples:
  coffer run --profile /etc/coffer/profiles/web-1.toml
  coffer run --profile /etc/coffer/profiles/web-1.toml --state-dir /var/lib/coffer --json";

pub(super) const AGENT: &str = "Examples:
  coffer agent --check
  coffer agent --profiles /etc/coffer/profiles --log-format json --metrics-listen 127.0.0.1:9184
  coffer agent --profiles ./profiles --state-dir ./state --max-running 1";

pub(super) const STATUS: &str = "Examples:
  coffer status
  coffer status --profile /etc/coffer/profiles/web-1.toml --json
  coffer status --profiles ./profiles --state-dir ./state";

pub(super) const POLICY: &str = "Examples:
  coffer policy --role agent --repo s3://acme-backups/web-1
  coffer policy --role operator --profile /etc/coffer/profiles/web-1.toml
  coffer policy --lifecycle --apply --repo s3://acme-backups/web-1";

pub(super) const UNDELETE: &str = "Examples:
  coffer undelete --as-of '2026-11-20 14:00' --dry-run --repo s3://acme-backups/web-1 --identity operator.key
  coffer undelete --as-of '3 days ago' --profile /etc/coffer/profiles/web-1.toml --identity operator.key";

pub(super) const COMPLETIONS: &str = "Examples:
  coffer completions bash > /usr/local/share/bash-completion/completions/coffer
  coffer completions zsh > /usr/local/share/zsh/site-functions/_coffer
  coffer completions fish > ~/.config/fish/completions/coffer.fish";

pub(super) const MAN: &str = "Examples:
  coffer man /usr/local/share/man/man1
  coffer man ./man && man ./man/coffer-backup.1";

/// `coffer completions SHELL`: the completion script on stdout.
pub(super) fn completions(shell: clap_complete::Shell) -> Result<Exit> {
    let mut out = std::io::stdout().lock();
    write_completions(shell, &mut out)?;
    Ok(Exit::Success)
}

fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) -> Result<()> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "coffer", out);
    out.flush().context("writing the completion script")
}

/// `coffer man DIR`: one page per command (coffer.1, coffer-backup.1,
/// coffer-key-generate.1, …), hidden commands left out.
pub(super) fn man_pages(dir: &Path) -> Result<Exit> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Command;

    /// Every command and subcommand with its path from the top
    /// (`["coffer", "key", "generate"]`), clap's own `help` left out.
    fn commands() -> Vec<(Vec<String>, Command)> {
        fn walk(path: Vec<String>, cmd: &Command, out: &mut Vec<(Vec<String>, Command)>) {
            out.push((path.clone(), cmd.clone()));
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let mut p = path.clone();
                p.push(sub.get_name().to_string());
                walk(p, sub, out);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut out = Vec::new();
        walk(vec!["coffer".into()], &cmd, &mut out);
        out
    }

    /// Splits an example line as a shell would, for the parts examples
    /// use: words, '…' and "…" quotes; a pipe, redirection or `&&` ends
    /// the coffer invocation.
    fn shell_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word: Option<String> = None;
        let mut quote: Option<char> = None;
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => word.get_or_insert_default().push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    word.get_or_insert_default();
                }
                (None, c) if c.is_whitespace() => words.extend(word.take()),
                (None, c) => word.get_or_insert_default().push(c),
            }
        }
        assert_eq!(quote, None, "unbalanced quote in {line:?}");
        words.extend(word);
        let end = words
            .iter()
            .position(|w| ["|", ">", ">>", "&&", ";"].contains(&w.as_str()))
            .unwrap_or(words.len());
        words.truncate(end);
        words
    }

    /// The invocations listed under a command's "Examples:".
    fn examples(cmd: &Command) -> Vec<Vec<String>> {
        let text = cmd
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        text.lines()
            .skip_while(|l| l.trim() != "Examples:")
            .filter(|l| l.trim_start().starts_with("coffer "))
            .map(shell_words)
            .collect()
    }

    #[test]
    fn shell_words_splits_quotes_and_stops_at_pipes() {
        assert_eq!(
            shell_words("coffer find '*.docx' --since \"2 days ago\" | less"),
            ["coffer", "find", "*.docx", "--since", "2 days ago"]
        );
        assert_eq!(shell_words("coffer man d && man x"), ["coffer", "man", "d"]);
        assert_eq!(shell_words("coffer a '' b"), ["coffer", "a", "", "b"]);
    }

    #[test]
    fn every_flag_and_argument_has_help_text() {
        let mut missing = Vec::new();
        for (path, cmd) in commands() {
            if cmd
                .get_about()
                .is_none_or(|a| a.to_string().trim().is_empty())
            {
                missing.push(format!("{}: no description", path.join(" ")));
            }
            for arg in cmd.get_arguments() {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                if help.trim().is_empty() && !arg.is_hide_set() {
                    missing.push(format!("{}: {}", path.join(" "), arg.get_id()));
                }
            }
        }
        assert!(missing.is_empty(), "no help text:\n{}", missing.join("\n"));
    }

    #[test]
    fn every_command_has_examples_that_parse_to_it() {
        let mut problems = Vec::new();
        for (path, cmd) in commands() {
            let examples = examples(&cmd);
            if examples.len() < 2 {
                problems.push(format!("{}: {} example(s)", path.join(" "), examples.len()));
            }
            for words in examples {
                let line = words.join(" ");
                match Cli::command().try_get_matches_from(&words) {
                    Err(e) => problems.push(format!("{line}: {e}")),
                    Ok(m) => {
                        // The subcommands the parser took must begin with
                        // the command the example is listed under.
                        let mut reached = vec!["coffer".to_string()];
                        let mut m = &m;
                        while let Some((name, sub)) = m.subcommand() {
                            reached.push(name.to_string());
                            m = sub;
                        }
                        if !reached.starts_with(&path) {
                            problems.push(format!("{line}: runs {}", reached.join(" ")));
                        }
                        if path.len() == 1 && reached.len() < 2 {
                            problems.push(format!("{line}: no command"));
                        }
                    }
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn global_flags_are_listed_apart_from_a_commands_own() {
        for (path, cmd) in commands() {
            for arg in cmd.get_arguments() {
                let global = arg.is_global_set();
                let heading = arg.get_help_heading();
                if global {
                    assert_eq!(
                        heading,
                        Some(GLOBAL),
                        "{}: --{}",
                        path.join(" "),
                        arg.get_id()
                    );
                } else {
                    assert_ne!(
                        heading,
                        Some(GLOBAL),
                        "{}: --{}",
                        path.join(" "),
                        arg.get_id()
                    );
                }
            }
        }
        // As printed: `backup --help` shows its own flags, then the global ones.
        let help = Cli::command()
            .try_get_matches_from(["coffer", "backup", "--help"])
            .unwrap_err()
            .to_string();
        let (own, rest) = help
            .split_once(&format!("{GLOBAL}:"))
            .unwrap_or_else(|| panic!("no '{GLOBAL}:' heading in:\n{help}"));
        let global = rest.split("Examples:").next().unwrap_or_default();
        assert!(
            own.contains("--exclude") && !own.contains("--repo"),
            "{help}"
        );
        assert!(
            global.contains("--repo") && !global.contains("--exclude"),
            "{help}"
        );
        // The repository flag names every kind of URL.
        assert!(
            global.contains("s3://") && global.contains("file://"),
            "{help}"
        );
    }

    #[test]
    fn completions_name_every_command_for_each_shell() {
        use clap_complete::Shell;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            write_completions(shell, &mut out).unwrap();
            let script = String::from_utf8(out).unwrap();
            for name in [
                "backup",
                "restore",
                "export-agent",
                "rebuild",
                "completions",
            ] {
                assert!(script.contains(name), "{shell}: no {name}");
            }
        }
    }

    #[test]
    fn man_pages_are_written_for_every_visible_command() {
        let dir = tempfile::tempdir().unwrap();
        man_pages(dir.path()).unwrap();
        for (path, cmd) in commands() {
            let file = dir.path().join(format!("{}.1", path.join("-")));
            if cmd.is_hide_set() {
                assert!(!file.exists(), "{} is hidden", file.display());
                continue;
            }
            let page = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(page.starts_with(".ie"), "{}: not roff", file.display());
            assert!(page.contains(".SH NAME"), "{}", file.display());
        }
        let backup = std::fs::read_to_string(dir.path().join("coffer-backup.1")).unwrap();
        assert!(backup.contains("\\-\\-exclude"), "{backup}");
        assert!(backup.contains("Examples:"), "{backup}");
    }
}
