//! `coffer export`: a snapshot as a standard archive that the system `tar`
//! (and `zstd`) unpack into the tree that was backed up, bit for bit.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::env::*;
use crate::roundtrip::{Attr, finish_tree};

fn os(bytes: &[u8]) -> OsString {
    OsString::from_vec(bytes.to_vec())
}

/// A tree with nested folders, small and multi-chunk files, links, an empty
/// file, a fifo, odd and long names, set modes, owners and times.
fn build_tree(src: &Path) {
    let p = |rel: &str| src.join(rel);
    let mut attrs: Vec<(PathBuf, Attr)> = Vec::new();
    write_file(&p("a/aa.txt"), b"first name of a hard link\n");
    attrs.push((p("a/aa.txt"), Attr::new().mode(0o640).owner(1000, 1000)));
    write_file(&p("a/b/c/deep.txt"), b"deep\n");
    write_compressible_file(&p("a/b/log.txt"), 300 * 1024, 7);
    write_random_file(&p("big.bin"), 3 * MIB + 12_345, 11);
    attrs.push((p("big.bin"), Attr::new().mode(0o600)));
    write_file(&p("empty"), b"");
    write_file(&p("run.sh"), b"#!/bin/sh\necho hi\n");
    attrs.push((p("run.sh"), Attr::new().mode(0o4755)));
    write_file(&p("old"), b"from 1960\n");
    attrs.push((p("old"), Attr::new().mtime(-315_619_200, 500_000_000)));
    write_file(&p("whole-second"), b"x");
    attrs.push((p("whole-second"), Attr::new().mtime(1_000_000_000, 0)));
    // The second name comes later in walk order: a hard link to a/aa.txt.
    fs::hard_link(p("a/aa.txt"), p("a/b/hard")).unwrap();
    std::os::unix::fs::symlink("../big.bin", p("a/link")).unwrap();
    attrs.push((p("a/link"), Attr::new().mtime(1_234_567_890, 987_654_321)));
    std::os::unix::fs::symlink(format!("{}/target", "t".repeat(150)), p("long-link")).unwrap();
    mkfifo(&p("fifo"), 0o644);
    let odd = src.join(os(b"odd \xff\xfe\nname"));
    write_file(&odd, b"odd bytes in the name\n");
    let long = src
        .join("l".repeat(120))
        .join(format!("{}.txt", "n".repeat(130)));
    write_file(&long, b"a path longer than 100 bytes\n");
    fs::create_dir(p("dir-700")).unwrap();
    attrs.push((p("dir-700"), Attr::new().mode(0o700)));
    attrs.push((src.to_path_buf(), Attr::new().mode(0o750)));
    finish_tree(src, &attrs);
}

fn export_args(extra: &[&OsStr]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["export".into()];
    args.extend(extra.iter().map(|s| s.to_os_string()));
    args
}

/// Runs a shell pipeline, panicking with its output on failure.
#[track_caller]
fn sh(script: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// The names (as `tar -t` prints them, no escapes) in an archive file.
fn tar_names(archive: &Path, zst: bool) -> Vec<String> {
    let cat = if zst { "zstd -dc" } else { "cat" };
    sh(&format!(
        "{cat} {} | tar --quoting-style=literal -tf -",
        quote(archive)
    ))
    .lines()
    .map(|l| l.trim_end_matches('/').to_string())
    .collect()
}

fn no_temp_files(dir: &Path) {
    let left: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".coffer-"))
        .collect();
    assert!(
        left.is_empty(),
        "temporary files left in {}: {left:?}",
        dir.display()
    );
}

/// The details of the exports `coffer audit` lists.
#[track_caller]
fn audited_exports(env: &TestEnv) -> Vec<String> {
    let out = env.operator(["audit", "--json"]);
    out.expect_ok();
    out.json()
        .as_array()
        .unwrap_or_else(|| panic!("audit --json must print an array\n{out}"))
        .iter()
        .filter(|e| str_field(e, "action") == "export")
        .map(|e| str_field(e, "detail").to_string())
        .collect()
}

#[test]
fn export_unpacks_with_the_system_tar() {
    let env = TestEnv::with_repo();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    env.backup(&[&src]);
    let out_dir = env.source_dir("out");

    for (format, zst) in [("tar", false), ("tar.zst", true)] {
        let archive = out_dir.join(format!("snap.{format}"));
        let started = Instant::now();
        let out = env.operator(export_args(&[
            "latest".as_ref(),
            "--format".as_ref(),
            format.as_ref(),
            "--output".as_ref(),
            archive.as_os_str(),
            "--json".as_ref(),
        ]));
        out.expect_ok();
        let secs = started.elapsed().as_secs_f64();
        let v = out.json();
        let bytes = u64_field(&v, "bytes");
        eprintln!(
            "export {format}: {} of files, archive {}, {secs:.2} s ({:.0} MiB/s, debug build)",
            mib(bytes),
            mib(u64_field(&v, "archive_bytes")),
            bytes as f64 / MIB as f64 / secs
        );
        assert_eq!(
            fs::metadata(&archive).unwrap().len(),
            u64_field(&v, "archive_bytes")
        );
        let target = env.unique_path("unpacked");
        fs::create_dir(&target).unwrap();
        let cat = if zst { "zstd -dc" } else { "cat" };
        sh(&format!(
            "{cat} {} | tar -xpf - -C {}",
            quote(&archive),
            quote(&target)
        ));
        assert_trees_equal(&src, &restored_path(&target, &src));
        no_temp_files(&out_dir);
    }

    let audited = audited_exports(&env);
    assert_eq!(audited.len(), 2, "one audit row per export: {audited:?}");
    assert!(
        audited[1].contains("snap.tar.zst") && audited[1].contains("tar.zst"),
        "the audit row names the output and format: {audited:?}"
    );
}

#[test]
fn export_include_stdout_and_refusals() {
    let env = TestEnv::with_repo();
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    build_tree(&src);
    env.backup(&[&src]);
    let stored = stored_form(&src).display().to_string();
    let out_dir = env.source_dir("out");

    // --include: only that part; a hard link whose first name is left out
    // carries the content itself.
    let archive = out_dir.join("part.tar");
    env.operator(export_args(&[
        "latest".as_ref(),
        "--include".as_ref(),
        format!("{stored}/a/b/**").as_ref(),
        "--output".as_ref(),
        archive.as_os_str(),
    ]))
    .expect_ok();
    let mut names = tar_names(&archive, false);
    names.sort();
    let want: Vec<String> = ["a/b/c", "a/b/c/deep.txt", "a/b/hard", "a/b/log.txt"]
        .iter()
        .map(|n| format!("{stored}/{n}"))
        .collect();
    assert_eq!(
        names, want,
        "--include 'a/b/**' exports exactly what is below a/b"
    );
    let target = env.unique_path("part");
    fs::create_dir(&target).unwrap();
    sh(&format!(
        "tar -xpf {} -C {}",
        quote(&archive),
        quote(&target)
    ));
    let hard = restored_path(&target, &src).join("a/b/hard");
    assert_eq!(fs::read(&hard).unwrap(), b"first name of a hard link\n");

    // To standard output, piped into `tar -t`.
    let mut cmd = env.command([export_args(&["latest".as_ref()]), env.operator_flags()].concat());
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let listing = Command::new("tar")
        .args(["-tf", "-"])
        .stdin(child.stdout.take().unwrap())
        .output()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "export to stdout failed: {status}");
    assert!(listing.status.success(), "tar -t failed on the stream");
    let listed = String::from_utf8_lossy(&listing.stdout);
    for want in ["big.bin", "a/b/c/deep.txt", "a/link", "fifo", "empty"] {
        assert!(
            listed.lines().any(|l| l == format!("{stored}/{want}")),
            "tar -t of the stream lacks {want}:\n{listed}"
        );
    }

    // Without the identity: refused with the hint, no file written.
    let denied = out_dir.join("denied.tar");
    let out = env.agent(export_args(&[
        "latest".as_ref(),
        "--output".as_ref(),
        denied.as_os_str(),
    ]));
    out.expect_failure()
        .expect_short_stderr(2)
        .expect_stderr_contains("--identity");
    assert!(
        !denied.exists(),
        "a refused export must not leave {}",
        denied.display()
    );
    no_temp_files(&out_dir);
}

#[test]
fn export_of_a_damaged_pack_fails_and_leaves_no_file() {
    let env = TestEnv::with_repo();
    let src = env.path("src");
    write_random_file(&src.join("one.bin"), 4 * MIB, 21);
    write_random_file(&src.join("two.bin"), 4 * MIB, 22);
    env.backup(&[&src]);
    // The middle of the largest pack is file data (file lists are written last).
    let (key, pack, _) = env.packs().into_iter().max_by_key(|p| p.2).unwrap();
    let mut bytes = fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    env.replace_object(&key, &bytes);

    let out_dir = env.source_dir("out");
    let archive = out_dir.join("damaged.tar.zst");
    let out = env.operator(export_args(&[
        "latest".as_ref(),
        "--output".as_ref(),
        archive.as_os_str(),
    ]));
    out.expect_failure()
        .expect_short_stderr(1)
        .expect_stderr_contains(&key)
        .expect_stderr_contains_any(&["one.bin", "two.bin"])
        .expect_stderr_contains("check --read-data");
    assert!(
        !archive.exists(),
        "a failed export must not leave {}",
        archive.display()
    );
    no_temp_files(&out_dir);
    let audited = audited_exports(&env);
    assert!(
        audited.len() == 1 && audited[0].contains("failed"),
        "the failed export is audited: {audited:?}"
    );
}
