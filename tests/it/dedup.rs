//! Deduplication: unchanged data is not stored twice, an insertion moves only
//! nearby chunk boundaries, and dedup works from the repository alone when
//! the catalog (a cache) is lost.

use std::fs;
use std::path::Path;

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
