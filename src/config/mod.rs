//! Backup profiles (TOML). The file's shape is [`ProfileFile`]; what the
//! engines use is the resolved [`Profile`] with absolute paths and checked values.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("profile {path} line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("profile {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("profile {path}: {message}")]
    Io { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    name: String,
    sources: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    repository: String,
    agent_key: Option<String>,
    identity: Option<String>,
    catalog: Option<String>,
    #[serde(default = "default_level")]
    compression: i32,
    #[serde(default)]
    auto_init: bool,
    copy_to: Option<String>,
    schedule: Option<ScheduleFile>,
    retention: Option<RetentionFile>,
    prune: Option<PruneFile>,
    hooks: Option<HooksFile>,
    notify: Option<NotifyFile>,
    s3: Option<S3File>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneFile {
    enabled: Option<bool>,
    grace: Option<String>,
    max_unused: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HooksFile {
    before: Option<String>,
    after: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    pass_env: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyFile {
    webhook: Option<String>,
    ping: Option<String>,
    #[serde(default)]
    on_success: bool,
}

/// `[s3]`: how to reach an `s3://` repository. Credentials come from the
/// standard AWS chain (environment, shared files, instance metadata).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3File {
    region: Option<String>,
    endpoint: Option<String>,
    path_style: Option<bool>,
    ca_bundle: Option<String>,
    #[serde(default)]
    allow_insecure_http: bool,
    max_attempts: Option<u32>,
    checksums: Option<String>,
    storage_class: Option<String>,
    server_side_encryption: Option<String>,
    sse_kms_key_id: Option<String>,
    upload_concurrency: Option<usize>,
    multipart_threshold_mib: Option<u64>,
    #[serde(default)]
    allowed_regions: Vec<String>,
    credentials_file: Option<String>,
    /// "governance" or "compliance" (docs/IMMUTABILITY.md).
    object_lock: Option<crate::storage::LockMode>,
}

/// zstd level 3: 1.2% smaller than level 2 on the benchmark data set for
/// about 10% more backup CPU (docs/FORMAT.md, "Choices and their measured cost").
pub const DEFAULT_COMPRESSION: i32 = 3;

fn default_level() -> i32 {
    crate::config::DEFAULT_COMPRESSION
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleFile {
    times: Option<Vec<String>>,
    interval: Option<String>,
    max_per_day: Option<u32>,
    timezone: Option<String>,
    jitter: Option<String>,
    catch_up: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionFile {
    run_by: Option<RetentionBy>,
    keep_within: Option<String>,
    keep_last: Option<u32>,
    keep_hourly: Option<u32>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
}

/// When the agent runs a profile.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleKind {
    /// Times of day, minutes after midnight.
    Times(Vec<u32>),
    Interval(jiff::SignedDuration),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub max_per_day: u32,
    /// "UTC", "local" or an IANA name; checked to exist when loaded.
    pub timezone: String,
    pub jitter: jiff::SignedDuration,
    /// Run once on start if a slot was missed while the agent was down.
    pub catch_up: bool,
}

/// Without a `[schedule]`: every 4 hours (six a day), UTC, 5 minutes of jitter.
impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            kind: ScheduleKind::Interval(jiff::SignedDuration::from_hours(4)),
            max_per_day: MAX_PER_DAY,
            timezone: "UTC".into(),
            jitter: jiff::SignedDuration::from_mins(5),
            catch_up: true,
        }
    }
}

impl Schedule {
    /// The schedule's time zone (validated at load, so this cannot fail then).
    pub fn tz(&self) -> jiff::tz::TimeZone {
        time_zone(&self.timezone).unwrap_or(jiff::tz::TimeZone::UTC)
    }
}

/// Resolves "UTC", "local" or an IANA zone name.
pub fn time_zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    match name {
        "UTC" | "utc" => Ok(jiff::tz::TimeZone::UTC),
        "local" => Ok(jiff::tz::TimeZone::system()),
        _ => jiff::tz::TimeZone::get(name).map_err(|_| {
            format!("{name:?} is not a time zone: use \"UTC\", \"local\" or an IANA name like \"Europe/Berlin\"")
        }),
    }
}

/// `[prune]`: deleting data no snapshot needs (docs/FORMAT.md, "Prune").
#[derive(Clone, Debug, PartialEq)]
pub struct PruneSettings {
    pub enabled: bool,
    /// Unreferenced objects younger than this are left (a backup may be using them).
    pub grace: jiff::SignedDuration,
    /// A pack with more than this percentage of unused bytes is repacked.
    pub max_unused: u32,
}

impl Default for PruneSettings {
    fn default() -> Self {
        PruneSettings {
            enabled: true,
            grace: jiff::SignedDuration::from_hours(2),
            max_unused: 20,
        }
    }
}

/// `[hooks]`: shell commands around a backup.
#[derive(Clone, Debug, PartialEq)]
pub struct Hooks {
    pub before: Option<String>,
    pub after: Option<String>,
    pub timeout: jiff::SignedDuration,
    /// Secret variables (`engine::job::hooks::is_secret`) the hooks inherit
    /// all the same; every other variable is inherited anyway.
    pub pass_env: Vec<String>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            before: None,
            after: None,
            timeout: jiff::SignedDuration::from_mins(15),
            pass_env: Vec::new(),
        }
    }
}

impl Hooks {
    /// The timeout as the hook runner takes it (checked to be at least 1s at load).
    pub fn timeout_std(&self) -> std::time::Duration {
        std::time::Duration::try_from(self.timeout).unwrap_or(std::time::Duration::from_secs(1))
    }
}

/// `[notify]`: where the agent reports runs.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Notify {
    pub webhook: Option<String>,
    pub ping: Option<String>,
    pub on_success: bool,
}

/// Who applies a profile's retention (forget and prune).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RetentionBy {
    /// The agent, after each backup.
    #[default]
    Agent,
    /// A maintainer host or role with delete rights: the agent's
    /// credentials can only add (an append-only agent, docs/IMMUTABILITY.md),
    /// so its runs leave retention out and say so.
    Maintainer,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Retention {
    /// `[retention] run_by`.
    pub run_by: RetentionBy,
    pub keep_within: jiff::SignedDuration,
    pub keep_last: u32,
    pub keep_hourly: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
}

/// Without a `[retention]` (and for `coffer forget` without a profile):
/// keep everything of the last 90 days, the product's promise.
impl Default for Retention {
    fn default() -> Self {
        Retention {
            run_by: RetentionBy::Agent,
            keep_within: crate::time::days(90),
            keep_last: 0,
            keep_hourly: 0,
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
        }
    }
}

/// A checked profile with absolute paths.
#[derive(Clone, Debug)]
pub struct Profile {
    pub file: PathBuf,
    pub name: String,
    pub sources: Vec<PathBuf>,
    pub exclude: Vec<String>,
    pub repository: String,
    pub agent_key: Option<PathBuf>,
    pub identity: Option<PathBuf>,
    pub catalog: Option<PathBuf>,
    pub compression: i32,
    pub auto_init: bool,
    /// A second repository every backup is replicated to.
    pub copy_to: Option<String>,
    pub schedule: Schedule,
    pub retention: Retention,
    pub prune: PruneSettings,
    pub hooks: Hooks,
    pub notify: Notify,
    pub s3: crate::storage::S3Options,
}

/// The hard cap of snapshots per day (the product promise).
pub const MAX_PER_DAY: u32 = 6;

/// Parses a duration: the one grammar of [`crate::duration`].
pub fn parse_duration(s: &str) -> Result<jiff::SignedDuration, String> {
    crate::duration::parse(s)
}

fn parse_time_of_day(s: &str) -> Result<u32, String> {
    let (h, m) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not a time like 02:30"))?;
    let (h, m): (u32, u32) = (
        h.parse().map_err(|_| format!("{s:?}: bad hour"))?,
        m.parse().map_err(|_| format!("{s:?}: bad minute"))?,
    );
    if h > 23 || m > 59 {
        return Err(format!("{s:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}

/// The line where `key = …` is first set, if it is.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    if key.is_empty() {
        return None;
    }
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Profile {
    pub fn load(path: &Path) -> Result<Profile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            path: path.to_path_buf(),
            message: format!("{e}; check the --profile path"),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Profile, ConfigError> {
        let raw: ProfileFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(1),
            message: format!(
                "{}; see the profile reference in README.md",
                e.message().trim_end()
            ),
        })?;
        let cx = ParseCx::new(text, path);
        let invalid = |m: String| cx.invalid(m);
        check_top_level(&raw).map_err(invalid)?;
        let repository = cx.repository_url(&raw.repository);
        let schedule = raw
            .schedule
            .map(parse_schedule)
            .transpose()
            .map_err(invalid)?
            .unwrap_or_default();
        let retention = raw
            .retention
            .map(parse_retention)
            .transpose()
            .map_err(invalid)?
            .unwrap_or_default();
        let prune = raw
            .prune
            .map(parse_prune)
            .transpose()
            .map_err(invalid)?
            .unwrap_or_default();
        let hooks = raw
            .hooks
            .map(parse_hooks)
            .transpose()
            .map_err(invalid)?
            .unwrap_or_default();
        let notify = raw
            .notify
            .map(parse_notify)
            .transpose()
            .map_err(invalid)?
            .unwrap_or_default();
        let s3 = match raw.s3 {
            None => crate::storage::S3Options::default(),
            Some(f) => parse_s3(f, &|p| cx.resolve(p)).map_err(invalid)?,
        };
        Ok(Profile {
            copy_to: raw.copy_to.as_deref().map(|u| cx.repository_url(u)),
            s3,
            file: path.to_path_buf(),
            name: raw.name,
            sources: raw.sources.iter().map(|s| cx.resolve(s)).collect(),
            exclude: raw.exclude,
            repository,
            agent_key: raw.agent_key.as_deref().map(|p| cx.resolve(p)),
            identity: raw.identity.as_deref().map(|p| cx.resolve(p)),
            catalog: raw.catalog.as_deref().map(|p| cx.resolve(p)),
            compression: raw.compression,
            auto_init: raw.auto_init,
            schedule,
            retention,
            prune,
            hooks,
            notify,
        })
    }
}

/// What parsing one profile file needs besides its values: the text (to
/// point errors at their line) and the folder relative paths start from.
struct ParseCx<'a> {
    text: &'a str,
    path: &'a Path,
    base: PathBuf,
}

impl<'a> ParseCx<'a> {
    fn new(text: &'a str, path: &'a Path) -> ParseCx<'a> {
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::path::absolute(&base).unwrap_or(base);
        ParseCx { text, path, base }
    }

    /// Messages start with the key they are about; point at its line.
    fn invalid(&self, message: String) -> ConfigError {
        let key = message
            .split([' ', ':', '='])
            .next()
            .and_then(|k| k.rsplit('.').next())
            .unwrap_or("");
        match line_of_key(self.text, key) {
            Some(line) => ConfigError::Parse {
                path: self.path.to_path_buf(),
                line,
                message,
            },
            None => ConfigError::Invalid {
                path: self.path.to_path_buf(),
                message,
            },
        }
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// `repository` and `copy_to`: a URL, or a folder relative to the profile.
    fn repository_url(&self, u: &str) -> String {
        match u.strip_prefix("file://") {
            Some(p) => format!(
                "file://{}",
                self.resolve(p.strip_prefix("localhost").unwrap_or(p))
                    .display()
            ),
            None if u.contains("://") => u.to_string(),
            None => format!("file://{}", self.resolve(u).display()),
        }
    }
}

// The per-field helpers below (and `time_zone`, `parse_duration`,
// `parse_time_of_day` above) return a String on purpose: the message is
// immediately prefixed with its key and wrapped by `ParseCx::invalid` into
// `ConfigError::Parse`/`Invalid`, which reads that key to find the line.
// The typed error is ConfigError; a variant per message would only be
// turned back into text one call later.

/// The top-level keys: name, sources, compression, excludes, URLs.
fn check_top_level(raw: &ProfileFile) -> Result<(), String> {
    if raw.name.is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "name {:?}: use letters, digits, '-' and '_' only",
            raw.name
        ));
    }
    if raw.sources.is_empty() {
        return Err("sources is empty; name at least one folder to back up".into());
    }
    if !(1..=19).contains(&raw.compression) {
        return Err(format!(
            "compression = {}: choose a zstd level from 1 to 19 (3 is a good default)",
            raw.compression
        ));
    }
    crate::engine::glob::Globs::new(&raw.exclude, "exclude").map_err(|e| e.to_string())?;
    for (key, url) in [
        ("repository", Some(&raw.repository)),
        ("copy_to", raw.copy_to.as_ref()),
    ] {
        if let Some(u) = url {
            crate::storage::check_url(u).map_err(|e| format!("{key}: {e}"))?;
        }
    }
    Ok(())
}

fn parse_schedule(s: ScheduleFile) -> Result<Schedule, String> {
    let d = Schedule::default();
    let kind = match (s.times, s.interval) {
        (Some(t), None) => {
            let mut mins = t
                .iter()
                .map(|x| parse_time_of_day(x))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("schedule.times: {e}"))?;
            mins.sort_unstable();
            mins.dedup();
            if mins.is_empty() {
                return Err("schedule.times is empty".into());
            }
            ScheduleKind::Times(mins)
        }
        (None, Some(i)) => {
            let d = parse_duration(&i).map_err(|e| format!("schedule.interval: {e}"))?;
            if d < jiff::SignedDuration::from_secs(1) {
                return Err("schedule.interval must be at least 1s".into());
            }
            ScheduleKind::Interval(d)
        }
        _ => return Err("schedule: set exactly one of `times` or `interval`".into()),
    };
    let max_per_day = s.max_per_day.unwrap_or(d.max_per_day);
    if max_per_day == 0 || max_per_day > MAX_PER_DAY {
        return Err(format!(
            "schedule.max_per_day = {max_per_day}: must be 1 to {MAX_PER_DAY}"
        ));
    }
    let timezone = s.timezone.unwrap_or(d.timezone);
    time_zone(&timezone).map_err(|e| format!("schedule.timezone: {e}"))?;
    let jitter = match s.jitter {
        Some(j) => parse_duration(&j).map_err(|e| format!("schedule.jitter: {e}"))?,
        None => d.jitter,
    };
    Ok(Schedule {
        kind,
        max_per_day,
        timezone,
        jitter,
        catch_up: s.catch_up.unwrap_or(d.catch_up),
    })
}

fn parse_retention(r: RetentionFile) -> Result<Retention, String> {
    let d = Retention::default();
    Ok(Retention {
        run_by: r.run_by.unwrap_or_default(),
        keep_within: match r.keep_within {
            Some(k) => parse_duration(&k).map_err(|e| format!("retention.keep_within: {e}"))?,
            None => d.keep_within,
        },
        keep_last: r.keep_last.unwrap_or(d.keep_last),
        keep_hourly: r.keep_hourly.unwrap_or(d.keep_hourly),
        keep_daily: r.keep_daily.unwrap_or(d.keep_daily),
        keep_weekly: r.keep_weekly.unwrap_or(d.keep_weekly),
        keep_monthly: r.keep_monthly.unwrap_or(d.keep_monthly),
    })
}

fn parse_prune(p: PruneFile) -> Result<PruneSettings, String> {
    let d = PruneSettings::default();
    if let Some(m) = p.max_unused.filter(|m| *m > 100) {
        return Err(format!(
            "prune.max_unused = {m}: a percentage from 0 to 100"
        ));
    }
    Ok(PruneSettings {
        enabled: p.enabled.unwrap_or(d.enabled),
        grace: match p.grace {
            Some(g) => parse_duration(&g).map_err(|e| format!("prune.grace: {e}"))?,
            None => d.grace,
        },
        max_unused: p.max_unused.unwrap_or(d.max_unused),
    })
}

fn parse_hooks(h: HooksFile) -> Result<Hooks, String> {
    let timeout = match h.timeout {
        Some(t) => parse_duration(&t).map_err(|e| format!("hooks.timeout: {e}"))?,
        None => Hooks::default().timeout,
    };
    if timeout < jiff::SignedDuration::from_secs(1) {
        return Err("hooks.timeout must be at least 1s".into());
    }
    if let Some(bad) = h
        .pass_env
        .iter()
        .find(|n| n.is_empty() || n.contains(['=', '\0']))
    {
        return Err(format!(
            "hooks.pass_env: {bad:?} is not a variable name (names only, no '=')"
        ));
    }
    let nonempty = |c: Option<String>| c.filter(|c| !c.trim().is_empty());
    Ok(Hooks {
        before: nonempty(h.before),
        after: nonempty(h.after),
        timeout,
        pass_env: h.pass_env,
    })
}

fn parse_notify(n: NotifyFile) -> Result<Notify, String> {
    for (key, url) in [("notify.webhook", &n.webhook), ("notify.ping", &n.ping)] {
        if let Some(u) = url
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(format!("{key} = {u:?}: give an http:// or https:// URL"));
        }
    }
    Ok(Notify {
        webhook: n.webhook,
        ping: n.ping.map(|p| p.trim_end_matches('/').to_string()),
        on_success: n.on_success,
    })
}

fn parse_s3(
    f: S3File,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<crate::storage::S3Options, String> {
    if let Some(n) = f.max_attempts.filter(|n| !(1..=20).contains(n)) {
        return Err(format!("max_attempts = {n}: choose 1 to 20"));
    }
    if let Some(n) = f.upload_concurrency.filter(|n| !(1..=64).contains(n)) {
        return Err(format!("upload_concurrency = {n}: choose 1 to 64"));
    }
    // S3 takes parts of 5 MiB at least, and one PUT of 5 GiB at most.
    if let Some(n) = f
        .multipart_threshold_mib
        .filter(|n| !(5..=5120).contains(n))
    {
        return Err(format!("multipart_threshold_mib = {n}: choose 5 to 5120"));
    }
    if let Some(c) = f
        .storage_class
        .as_deref()
        .filter(|c| matches!(*c, "GLACIER" | "DEEP_ARCHIVE"))
    {
        return Err(format!(
            "storage_class = {c:?}: archive classes cannot be read back without a thaw; use STANDARD or STANDARD_IA"
        ));
    }
    if let Some(s) = f
        .server_side_encryption
        .as_deref()
        .filter(|s| !matches!(*s, "AES256" | "aws:kms"))
    {
        return Err(format!(
            "server_side_encryption = {s:?}: use \"AES256\" or \"aws:kms\""
        ));
    }
    let checksums = match f.checksums.as_deref() {
        None => crate::storage::ChecksumSetting::Auto,
        Some(c) => c.parse().map_err(|e| format!("[s3] checksums = {e}"))?,
    };
    Ok(crate::storage::S3Options {
        checksums,
        region: f.region,
        endpoint: f.endpoint,
        path_style: f.path_style,
        ca_bundle: f.ca_bundle.as_deref().map(resolve),
        allow_insecure_http: f.allow_insecure_http,
        max_attempts: f.max_attempts.unwrap_or(0),
        storage_class: f.storage_class,
        server_side_encryption: f.server_side_encryption,
        sse_kms_key_id: f.sse_kms_key_id,
        upload_concurrency: f.upload_concurrency.unwrap_or(0),
        allowed_regions: f.allowed_regions,
        multipart_threshold: f.multipart_threshold_mib.unwrap_or(0) << 20,
        credentials_file: f.credentials_file.as_deref().map(resolve),
        object_lock: f.object_lock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "web-1"
sources = ["/srv", "data"]
exclude = ["*.tmp"]
repository = "repo"
agent_key = "/etc/coffer/agent.key"

[schedule]
times = ["04:00", "00:00"]
max_per_day = 2

[retention]
keep_within = "30d"
keep_daily = 7
"#;

    #[test]
    fn a_good_profile_resolves_paths_and_values() {
        let p = Profile::parse(GOOD, Path::new("/etc/coffer/profiles/web.toml")).unwrap();
        assert_eq!(p.sources[1], PathBuf::from("/etc/coffer/profiles/data"));
        assert_eq!(p.repository, "file:///etc/coffer/profiles/repo");
        assert_eq!(p.schedule.kind, ScheduleKind::Times(vec![0, 240]));
        assert_eq!(p.retention.keep_within, crate::time::days(30));
        assert_eq!(p.retention.keep_daily, 7);
    }

    #[test]
    fn missing_sections_take_the_one_set_of_defaults() {
        let text = "name = \"p\"\nsources = [\"/srv\"]\nrepository = \"/r\"\n";
        let p = Profile::parse(text, Path::new("/etc/p.toml")).unwrap();
        assert_eq!(p.schedule, Schedule::default());
        assert_eq!(
            p.schedule.kind,
            ScheduleKind::Interval(jiff::SignedDuration::from_hours(4))
        );
        assert_eq!(p.retention, Retention::default());
        assert_eq!(p.retention.keep_within, crate::time::days(90));
        assert_eq!(p.hooks, Hooks::default());
        assert_eq!(p.hooks.timeout_std(), std::time::Duration::from_secs(900));
        assert_eq!(p.prune, PruneSettings::default());
        assert_eq!(p.notify, Notify::default());
        // An empty section is the same as none.
        let text = format!("{text}[schedule]\ntimes = [\"01:00\"]\n[retention]\n[hooks]\n");
        let p = Profile::parse(&text, Path::new("/etc/p.toml")).unwrap();
        assert_eq!(p.retention, Retention::default());
        assert_eq!(p.hooks, Hooks::default());
        assert_eq!(p.schedule.jitter, Schedule::default().jitter);
        assert_eq!(p.schedule.max_per_day, MAX_PER_DAY);
    }

    #[test]
    fn hooks_pass_env_takes_variable_names_only() {
        let base = "name = \"p\"\nsources = [\"/srv\"]\nrepository = \"/r\"\n[hooks]\n";
        let p = Profile::parse(
            &format!("{base}pass_env = [\"AWS_ACCESS_KEY_ID\"]\n"),
            Path::new("p.toml"),
        )
        .unwrap();
        assert_eq!(p.hooks.pass_env, ["AWS_ACCESS_KEY_ID"]);
        for bad in ["\"\"", "\"A=b\""] {
            let e = Profile::parse(&format!("{base}pass_env = [{bad}]\n"), Path::new("p.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("hooks.pass_env"), "{e}");
        }
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let text = GOOD.replace("keep_daily = 7", "keep_dialy = 7");
        let e = Profile::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 14") && e.contains("keep_dialy"), "{e}");
    }

    #[test]
    fn bad_values_are_refused_with_a_hint() {
        for (from, to, want) in [
            (
                "max_per_day = 2",
                "max_per_day = 9",
                "line 10: schedule.max_per_day = 9: must be 1 to 6",
            ),
            (
                "keep_within = \"30d\"",
                "keep_within = \"1 month\"",
                "retention.keep_within: \"1 month\": months and years have no fixed length",
            ),
            (
                "times = [\"04:00\", \"00:00\"]",
                "times = [\"25:00\"]",
                "schedule.times",
            ),
        ] {
            let e = Profile::parse(&GOOD.replace(from, to), Path::new("p.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn s3_sizes_out_of_range_are_refused() {
        for (line, want) in [
            ("upload_concurrency = 0", "choose 1 to 64"),
            (
                "multipart_threshold_mib = 4",
                "multipart_threshold_mib = 4: choose 5 to 5120",
            ),
        ] {
            let text = GOOD.replace("[schedule]", &format!("[s3]\n{line}\n\n[schedule]"));
            let e = Profile::parse(&text, Path::new("p.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e}");
        }
        let text = GOOD.replace(
            "[schedule]",
            "[s3]\nmultipart_threshold_mib = 5\n\n[schedule]",
        );
        let p = Profile::parse(&text, Path::new("p.toml")).unwrap();
        assert_eq!(p.s3.multipart_threshold, 5 << 20);
    }

    #[test]
    fn s3_checksums_is_read_by_name() {
        let with = |line: &str| {
            let text = GOOD.replace("[schedule]", &format!("[s3]\n{line}\n\n[schedule]"));
            Profile::parse(&text, Path::new("p.toml"))
        };
        use crate::storage::ChecksumSetting;
        let p = with("region = \"eu-west-1\"").unwrap();
        assert_eq!(p.s3.checksums, ChecksumSetting::Auto);
        let p = with("checksums = \"when_required\"").unwrap();
        assert_eq!(p.s3.checksums, ChecksumSetting::WhenRequired);
        let p = with("checksums = \"when_supported\"").unwrap();
        assert_eq!(p.s3.checksums, ChecksumSetting::WhenSupported);
        let e = with("checksums = \"off\"").unwrap_err().to_string();
        assert!(
            e.contains("checksums") && e.contains("when_required"),
            "{e}"
        );
    }

    #[test]
    fn mistyped_repository_urls_in_a_profile_are_refused() {
        for (url, meant) in [
            ("s3:/acme/web-1", "s3://acme/web-1"),
            ("file://srv/backup", "file:///srv/backup"),
        ] {
            let text = GOOD.replace("repository = \"repo\"", &format!("repository = {url:?}"));
            assert_ne!(text, GOOD);
            let e = Profile::parse(&text, Path::new("p.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("repository") && e.contains(meant), "{e}");
        }
    }
}
