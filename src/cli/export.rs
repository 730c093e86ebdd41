//! `coffer export`: a snapshot as a tar or tar.zst archive, to a file or stdout.

use super::select;
use super::{Context, Exit, print_json};
use crate::engine::export::{ExportOptions, ExportReport, Format, export as run_export};
use anyhow::{Context as _, Result, anyhow, bail};
use clap::Args;
use jiff::Timestamp;
use std::io::{BufWriter, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Snapshot id prefix or `latest` (the newest complete one; the default).
    snapshot: Option<String>,
    /// The newest snapshot at or before this time (RFC 3339, "2026-11-20 14:00", a date, "2 days ago").
    #[arg(long, value_parser = select::at)]
    at: Option<Timestamp>,
    #[command(flatten)]
    filter: select::FilterArgs,
    /// Export only entries matching this glob (and what is below them). Repeatable.
    #[arg(long)]
    include: Vec<String>,
    /// Archive format; default: tar.zst if the output's name ends in .zst or .tzst, else tar.
    #[arg(long)]
    format: Option<ArchiveFormat>,
    /// The archive file (written under a temporary name, then renamed), or `-` for standard output.
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
}

impl ExportArgs {
    pub fn at_misuse(&self) -> Option<String> {
        select::at_misuse(self.snapshot.as_deref(), self.at.is_some())
    }
}

/// `--format`'s values.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ArchiveFormat {
    Tar,
    #[value(name = "tar.zst")]
    TarZst,
}

fn format_of(args: &ExportArgs) -> Format {
    match args.format {
        Some(ArchiveFormat::TarZst) => Format::TarZst,
        Some(ArchiveFormat::Tar) => Format::Tar,
        None => {
            let name = args.output.to_string_lossy();
            if name.ends_with(".zst") || name.ends_with(".tzst") {
                Format::TarZst
            } else {
                Format::Tar
            }
        }
    }
}

/// Writes `path` through `write` under a temporary name beside it, synced and
/// renamed into place on success, removed on failure.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> crate::Result<ExportReport>,
) -> Result<ExportReport> {
    let name = path
        .file_name()
        .ok_or_else(|| anyhow!("--output {}: not a file name", path.display()))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".coffer-{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    // The archive holds the snapshot's plaintext: readable by its owner only.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| {
            format!(
                "cannot create {}; check that the folder exists and is writable",
                tmp.display()
            )
        })?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let result = write(&mut out)
        .map_err(anyhow::Error::from)
        .and_then(|report| {
            let file = out
                .into_inner()
                .map_err(|e| anyhow!("{}: {}", tmp.display(), e.error()))?;
            file.sync_all()
                .with_context(|| format!("{}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| {
                format!("cannot rename {} to {}", tmp.display(), path.display())
            })?;
            Ok(report)
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn export(ctx: &Context, args: ExportArgs) -> Result<Exit> {
    let format = format_of(&args);
    let to_stdout = args.output.as_os_str() == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        bail!(
            "refusing to write an archive to a terminal: pass --output FILE, or pipe it (coffer export latest | tar -tvf -)"
        );
    }
    if to_stdout && ctx.json {
        return Err(super::usage(
            "the archive goes to standard output, so --json needs --output FILE",
        ));
    }
    let (view, index) =
        select::open_one(ctx, &args.filter, (args.snapshot.as_deref(), args.at), "")?;
    let (id, snap) = &view.snaps[index];
    let opts = ExportOptions {
        include: args.include.clone(),
        format,
    };
    // The bar draws on stderr, so it shows only when stderr is a terminal,
    // also while the archive goes to stdout.
    let bar = ctx.progress();
    // Ctrl-C or SIGTERM stops the export cleanly: no partial --output file.
    let cancel = super::signal::Cancel::install()?;
    let started = std::time::Instant::now();
    let shown = if to_stdout {
        "standard output".to_string()
    } else {
        args.output.display().to_string()
    };
    let result = if to_stdout {
        let stdout = std::io::stdout();
        let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
        run_export(
            &view.repo,
            &view.blobs,
            snap,
            &opts,
            &mut out,
            &bar,
            cancel.flag(),
        )
        .map_err(anyhow::Error::from)
        .and_then(|r| {
            out.flush().context("standard output")?;
            Ok(r)
        })
    } else {
        write_atomically(&args.output, |out| {
            run_export(
                &view.repo,
                &view.blobs,
                snap,
                &opts,
                out,
                &bar,
                cancel.flag(),
            )
        })
    };
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    let what = format!(
        "snapshot {} include {:?} to {shown} as {}",
        id.short(),
        args.include,
        format.name()
    );
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            super::audit::record(
                ctx,
                &view.repo,
                &view.catalog,
                "export",
                &format!("{what}: failed: {}", super::render_error(&e)),
            );
            return Err(cancel.explain(
                "export",
                e.context(format!("export of snapshot {}", id.short())),
                "with --output no partial file is left; an archive sent to standard output is incomplete",
            ));
        }
    };
    super::audit::record(
        ctx,
        &view.repo,
        &view.catalog,
        "export",
        &format!(
            "{what}: {}, {} bytes, archive {} bytes",
            super::text::count(report.files, "file", "files"),
            report.bytes,
            report.archive_bytes
        ),
    );
    print_exported(ctx, id, &report, format, &shown, seconds, to_stdout)?;
    Ok(Exit::Success)
}

/// What an export wrote: JSON, or one line for people (nothing when the
/// archive itself went to standard output).
fn print_exported(
    ctx: &Context,
    id: &crate::repo::ids::SnapshotId,
    report: &crate::engine::export::ExportReport,
    format: Format,
    shown: &str,
    seconds: f64,
    to_stdout: bool,
) -> Result<()> {
    if ctx.json {
        print_json(&super::json::Exported {
            archive_bytes: report.archive_bytes,
            bytes: report.bytes,
            dirs: report.dirs,
            files: report.files,
            format: format.name(),
            links: report.links,
            output: shown,
            seconds,
            snapshot: id.to_hex(),
            special: report.special,
        })?;
    } else if !ctx.quiet && !to_stdout {
        println!(
            "exported snapshot {} to {shown} ({}): {} ({}), {}, {}; archive {} in {seconds:.1} s",
            id.short(),
            format.name(),
            super::text::count(report.files, "file", "files"),
            super::backup::human(report.bytes),
            super::text::count(report.dirs, "folder", "folders"),
            super::text::count(report.links, "link", "links"),
            super::backup::human(report.archive_bytes),
        );
    }
    Ok(())
}
