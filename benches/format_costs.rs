//! Measures the format choices recorded in docs/FORMAT.md on a real folder:
//! small files sealed one by one versus bundled, and the cost per blob.
//!
//!     cargo bench --bench format_costs -- /usr/share/doc
use coffer::repo::keys::{AgentKey, Keys};
use coffer::repo::pack::{BlobKind, seal_blob};
use std::time::Instant;

fn main() {
    let dir = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_else(|| "/usr/share/doc".into());
    let recipient = age::x25519::Identity::generate().to_public();
    let keys = Keys::from_agent_key(&AgentKey::generate("bench".into(), vec![recipient]));
    let limit = 256 * 1024;
    let mut files: Vec<Vec<u8>> = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(&dir)];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file()
                && m.len() < limit
                && let Ok(data) = std::fs::read(e.path())
            {
                files.push(data);
            }
        }
    }
    let raw: usize = files.iter().map(Vec::len).sum();
    println!(
        "{} small files (< 256 KiB) under {dir}, {raw} bytes",
        files.len()
    );

    let t = Instant::now();
    let mut sealed = 0;
    for f in &files {
        sealed += seal_blob(&keys, BlobKind::Data, keys.blob_id(f), f, 2)
            .bytes
            .len();
    }
    let one_by_one = t.elapsed();
    println!("one blob per file: {sealed} bytes stored, {one_by_one:?}");

    let t = Instant::now();
    let (mut sealed_b, mut bundles, mut cur) = (0, 0, Vec::new());
    for f in &files {
        cur.extend_from_slice(f);
        if cur.len() >= 1024 * 1024 {
            sealed_b += seal_blob(&keys, BlobKind::Data, keys.blob_id(&cur), &cur, 2)
                .bytes
                .len();
            bundles += 1;
            cur.clear();
        }
    }
    if !cur.is_empty() {
        sealed_b += seal_blob(&keys, BlobKind::Data, keys.blob_id(&cur), &cur, 2)
            .bytes
            .len();
        bundles += 1;
    }
    let bundled = t.elapsed();
    println!("bundled (~1 MiB): {bundles} blobs, {sealed_b} bytes stored, {bundled:?}");

    let t = Instant::now();
    let n = 2000;
    for i in 0..n {
        let b = [i as u8; 64];
        std::hint::black_box(seal_blob(&keys, BlobKind::Data, keys.blob_id(&b), &b, 2));
    }
    println!(
        "fixed cost per sealed blob (64-byte payload): {:?}",
        t.elapsed() / n
    );
}
