//! Deduplication: unchanged data is not stored twice, an insertion moves only
//! nearby chunk boundaries, and dedup works from the repository alone when
//! the catalog (a cache) is lost.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde_json::Value;

use crate::env::*;

/// Slack for metadata-only changes (trees of the ancestors of the source
/// directory, whose mtimes change while the tests run).
const METADATA_SLACK: u64 = 64 * KIB;

fn assert_small_increment(second: &serde_json::Value, data_bytes: u64, what: &str) {
    let data_added = u64_field(second, "data_added");
    let stored_added = u64_field(second, "stored_added");
    assert!(
        data_added <= METADATA_SLACK,
        "{what}: data_added is {data_added} bytes; expected about 0 (metadata only, <= {METADATA_SLACK})\n{second}"
    );
    let limit = data_bytes / 100 + METADATA_SLACK;
    assert!(
        stored_added <= limit,
        "{what}: stored_added is {stored_added} bytes; expected < 1% of the data + 64 KiB = {limit}\n{second}"
    );
}

fn delete_catalog(path: &Path) {
    assert!(
        path.exists(),
        "the catalog {} should exist after a backup",
        path.display()
    );
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = fs::remove_file(&p);
    }
}

fn unchanged_second_backup_adds_almost_nothing(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    make_mixed_dataset(&src, 24 * MIB, 100);
    let total = dir_size(&src);

    let first = env.backup(&[&src]);
    let first_added = u64_field(&first, "data_added");
    assert!(
        first_added >= total * 9 / 10,
        "first backup: data_added {first_added} should be about the data size {total}\n{first}"
    );
    assert_eq!(
        u64_field(&first, "bytes"),
        total,
        "backup bytes = total size of files: {first}"
    );

    let second = env.backup(&[&src]);
    assert_small_increment(&second, total, "second backup of unchanged data");
    assert_eq!(u64_field(&second, "files_new"), 0, "no new files: {second}");
    assert_eq!(
        u64_field(&second, "files_changed"),
        0,
        "no changed files: {second}"
    );
    assert_eq!(
        u64_field(&second, "files_unchanged"),
        u64_field(&second, "files"),
        "all files unchanged: {second}"
    );
    assert_eq!(env.snapshots().len(), 2, "each backup makes a snapshot");
}

fn insert_in_middle_of_large_file_adds_about_one_chunk(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    let size = 64 * MIB;
    let file = src.join("large.bin");
    write_random_file(&file, size, 4242);
    write_file(&src.join("other.txt"), b"another file");

    let first = env.backup(&[&src]);
    assert!(
        u64_field(&first, "data_added") >= size,
        "first backup: data_added should be at least the random file's size\n{first}"
    );

    let mut data = fs::read(&file).unwrap();
    let mid = data.len() / 2 + 12_345;
    data.splice(mid..mid, *b"TEN BYTES!");
    fs::write(&file, &data).unwrap();
    drop(data);
    set_mtime(&file, 1_700_000_123, 456);

    let second = env.backup(&[&src]);
    assert_eq!(
        u64_field(&second, "files_changed"),
        1,
        "one changed file: {second}"
    );
    let data_added = u64_field(&second, "data_added");
    let stored_added = u64_field(&second, "stored_added");
    assert!(
        data_added < 16 * MIB,
        "10 bytes inserted into a 64 MiB file added {} of new data (expected about one or two chunks, < 16 MiB)\n{second}",
        mib(data_added)
    );
    assert!(
        data_added > 0,
        "the changed region must be stored: {second}"
    );
    assert!(
        stored_added < 17 * MIB,
        "10 bytes inserted into a 64 MiB file stored {} (expected < 17 MiB)\n{second}",
        mib(stored_added)
    );
    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));
}

fn backup_without_catalog_dedups_against_repository(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    make_mixed_dataset(&src, 24 * MIB, 200);
    let total = dir_size(&src);
    env.backup(&[&src]);

    delete_catalog(&env.catalog);
    let second = env.backup(&[&src]);
    assert_small_increment(&second, total, "backup after deleting the catalog");
    assert!(
        env.catalog.exists(),
        "the catalog should be recreated at {}",
        env.catalog.display()
    );

    // Twice, with a change, to be sure the recreated catalog works.
    write_file(&src.join("new-after-catalog-loss.txt"), b"new");
    let third = env.backup(&[&src]);
    assert_eq!(u64_field(&third, "files_new"), 1, "one new file: {third}");
    assert_small_increment(&third, total, "backup after recreating the catalog");

    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));
}

/// `catalog rebuild` with the identity recreates the file cache too: the next
/// backup of unchanged data reads nothing.
fn catalog_rebuild_restores_file_cache(backend: Backend) {
    let env = TestEnv::with_repo_on(backend);
    let src = env.path("src");
    make_mixed_dataset(&src, 8 * MIB, 300);
    let total = dir_size(&src);
    env.backup(&[&src]);

    delete_catalog(&env.catalog);
    env.operator(["catalog", "rebuild"]).expect_ok();
    assert!(
        env.catalog.exists(),
        "catalog rebuild should write {}",
        env.catalog.display()
    );
    let second = env.backup(&[&src]);
    assert_small_increment(&second, total, "backup after catalog rebuild");
    assert_eq!(
        u64_field(&second, "files_unchanged"),
        u64_field(&second, "files"),
        "after `catalog rebuild` with the identity, unchanged files should be recognised from the file cache: {second}"
    );

    // Also as the agent (no identity): the chunk index is rebuilt, so no data
    // is re-uploaded even if every file is read again.
    delete_catalog(&env.catalog);
    env.agent(["catalog", "rebuild"]).expect_ok();
    let third = env.backup(&[&src]);
    assert_small_increment(&third, total, "backup after catalog rebuild by the agent");
}

on_both_backends!(
    unchanged_second_backup_adds_almost_nothing,
    insert_in_middle_of_large_file_adds_about_one_chunk,
    backup_without_catalog_dedups_against_repository,
    catalog_rebuild_restores_file_cache,
);

/// The file cache of a first backup of more files than it holds in memory
/// at once (16,384 rows: the rest are saved as the run goes) is whole: the
/// next backup reads none of them, and a file deleted between the two
/// loses its row (a third backup counts the file new when it is back).
#[test]
fn the_file_cache_of_many_files_is_saved_whole() {
    let env = TestEnv::with_repo();
    let src = env.path("src");
    let n = 17_000u64;
    for d in 0..17 {
        let dir = src.join(format!("d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            fs::write(dir.join(format!("f{f:04}")), format!("{d}/{f}")).unwrap();
        }
    }
    let first = env.backup(&[&src]);
    assert_eq!(u64_field(&first, "files_new"), n, "{first}");
    fs::remove_file(src.join("d03/f0007")).unwrap();
    let second = env.backup(&[&src]);
    assert_eq!(
        (
            u64_field(&second, "files_unchanged"),
            u64_field(&second, "files_new") + u64_field(&second, "files_changed")
        ),
        (n - 1, 0),
        "every file's row was kept\n{second}"
    );
    fs::write(src.join("d03/f0007"), "3/7").unwrap();
    let third = env.backup(&[&src]);
    assert_eq!(
        u64_field(&third, "files_new"),
        1,
        "the deleted file's row went\n{third}"
    );
}

/// The type of a file-cache row's content in its SQLite record when it is
/// one piece of 48 bytes (a blob of N bytes is of type 2N + 12).
const ONE_PIECE: u8 = 48 * 2 + 12;

/// The file cache's key of `file`: its path as the file list names it, each
/// '/' a NUL byte.
fn cache_key(file: &Path) -> Vec<u8> {
    stored_form(file)
        .as_os_str()
        .as_bytes()
        .iter()
        .map(|&b| if b == b'/' { 0 } else { b })
        .collect()
}

/// Damages the file cache's row of `file` in the catalog's database file, as
/// a bad disk would: its record's header says the content is one byte longer
/// than the record holds. A lookup by path reads only the path and still
/// works, and so do the other tables, but a read of the whole row fails
/// ("database disk image is malformed"), so the backup's read of the cache
/// in walk order stops there. Returns how many rows such a read gives first.
fn damage_file_cache_row(catalog: &Path, file: &Path) -> usize {
    {
        // Every page in the database file, none left in the WAL.
        let conn = rusqlite::Connection::open(catalog).expect("open the catalog");
        let busy: i64 = conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .expect("checkpoint the catalog");
        assert_eq!(busy, 0, "nothing else has the catalog open");
    }
    let key = cache_key(file);
    let mut db = fs::read(catalog).unwrap();
    let at: Vec<usize> = db
        .windows(key.len())
        .enumerate()
        .filter(|(_, w)| *w == key.as_slice())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        at.len(),
        1,
        "the key of {} once in the catalog",
        file.display()
    );
    // The content's type is the header's last byte, just before the path.
    assert_eq!(db[at[0] - 1], ONE_PIECE, "a row of one piece");
    db[at[0] - 1] += 2;
    fs::write(catalog, &db).unwrap();

    let conn = rusqlite::Connection::open(catalog).expect("open the catalog");
    let snapshots: i64 = conn
        .query_row("SELECT count(*) FROM snapshots", [], |r| r.get(0))
        .expect("the other tables are readable");
    assert!(snapshots > 0);
    let mut st = conn
        .prepare("SELECT path, size, mtime, ctime, ino, content FROM files ORDER BY path")
        .unwrap();
    let mut rows = st.query([]).unwrap();
    let mut read = 0;
    let error = loop {
        match rows.next() {
            Ok(Some(_)) => read += 1,
            Ok(None) => panic!("the whole file cache was read ({read} rows)"),
            Err(e) => break e,
        }
    };
    assert_eq!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt),
        "{error}"
    );
    read
}

/// (unchanged, changed, new) files of a `backup --json` report.
fn file_counts(report: &Value) -> (u64, u64, u64) {
    (
        u64_field(report, "files_unchanged"),
        u64_field(report, "files_changed"),
        u64_field(report, "files_new"),
    )
}

/// The warnings of a `backup --json` report that say the file cache was
/// read only in part.
fn cache_warnings(report: &Value) -> Vec<&str> {
    report["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("\"warnings\" must be an array\n{report}"))
        .iter()
        .filter_map(Value::as_str)
        .filter(|w| w.starts_with("the file cache could not be read to its end"))
        .collect()
}

/// `n` small files f00, f01, ... in `src`, each of one piece.
fn numbered_files(src: &Path, n: usize) {
    for i in 0..n {
        write_file(
            &src.join(format!("f{i:02}")),
            format!("version 1 of file {i}").as_bytes(),
        );
    }
}

/// A file cache that cannot be read to its end (a row damaged on disk)
/// costs time, never a wrong backup: the backup succeeds and says so, the
/// files from the damaged row on are read again (none is taken for
/// unchanged), the snapshot restores whole, and as the damaged row was a
/// file's that is still there, it is written afresh: the next backup reads
/// the whole cache and finds every file unchanged.
#[test]
fn a_file_cache_unreadable_part_way_costs_a_read_of_the_rest() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    numbered_files(&src, 10);
    let first = env.backup(&[&src]);
    assert_eq!(file_counts(&first), (0, 0, 10), "{first}");
    assert_eq!(damage_file_cache_row(&env.catalog, &src.join("f05")), 5);
    // A change before the damaged row, which the cache tells, and one after.
    write_file(&src.join("f02"), b"version 2 of file 2");
    write_file(&src.join("f08"), b"version 2 of file 8");

    let second = env.backup(&[&src]);
    assert_eq!(
        file_counts(&second),
        (4, 1, 5),
        "f00 to f04 as the cache has them (f02 changed), f05 to f09 read again\n{second}"
    );
    let warned = cache_warnings(&second);
    assert_eq!(warned.len(), 1, "{second}");
    // SQLite's own words for the damage, and the cure.
    assert!(
        warned[0].contains("malformed") && warned[0].contains("coffer catalog rebuild"),
        "{second}"
    );
    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));
    assert_eq!(
        fs::read(restored_path(&target, &src).join("f08")).unwrap(),
        b"version 2 of file 8"
    );

    let third = env.backup(&[&src]);
    assert_eq!(
        file_counts(&third),
        (10, 0, 0),
        "every row is back\n{third}"
    );
    assert!(cache_warnings(&third).is_empty(), "{third}");
}

/// The damaged row of a file deleted since is not written again, so every
/// backup stops reading the cache there and reads the files after it again;
/// but the rows of the files still there are kept (those before the damage
/// are never taken for files gone, those after are written again), and
/// `catalog rebuild` ends it.
#[test]
fn a_lasting_damage_in_the_file_cache_drops_no_row_of_a_file_still_there() {
    let env = TestEnv::with_repo();
    let src = env.source_dir("src");
    numbered_files(&src, 10);
    env.backup(&[&src]);
    fs::remove_file(src.join("f05")).unwrap();
    assert_eq!(damage_file_cache_row(&env.catalog, &src.join("f05")), 5);

    for run in ["second", "third"] {
        let report = env.backup(&[&src]);
        assert_eq!(
            file_counts(&report),
            (5, 0, 4),
            "{run} backup: f00 to f04 as the cache has them, f06 to f09 read again\n{report}"
        );
        assert_eq!(cache_warnings(&report).len(), 1, "{run} backup\n{report}");
    }
    let conn = rusqlite::Connection::open(&env.catalog).unwrap();
    for i in (0..10).filter(|&i| i != 5) {
        let key = cache_key(&src.join(format!("f{i:02}")));
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM files WHERE path = ?1", [&key], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, 1, "the row of f{i:02}");
    }
    drop(conn);
    let target = env.restore("latest");
    assert_trees_equal(&src, &restored_path(&target, &src));

    // With the identity: the file cache too.
    env.operator(["catalog", "rebuild"]).expect_ok();
    let after = env.backup(&[&src]);
    assert_eq!(file_counts(&after), (9, 0, 0), "{after}");
    assert!(cache_warnings(&after).is_empty(), "{after}");
}
