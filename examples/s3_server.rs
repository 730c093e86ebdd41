//! A local S3 server over TLS for benchmarks and trials: the same in-process
//! server the tests use (s3s + s3s-fs behind rustls, CA made at start).
//!
//!     cargo run --release --example s3_server -- DIR [BUCKET...]
//!
//! Prints `endpoint=https://127.0.0.1:PORT` and `ca=DIR/test-ca.pem`, then
//! serves until stdin closes; every 200 ms it writes the number of requests
//! served so far to `DIR/requests` and the response body bytes sent so far
//! to `DIR/bytes_out`.

#[path = "../tests/it/s3server.rs"]
#[allow(dead_code)]
mod s3server;

use std::io::{Read, Write};
use std::sync::atomic::Ordering;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: s3_server DIR [BUCKET...]");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create DIR");
    let server = s3server::S3Server::start(&dir);
    for bucket in args {
        server.create_bucket(&bucket);
    }
    println!("endpoint={}", server.endpoint());
    println!("ca={}", server.ca_pem.display());
    println!("access_key={}", s3server::ACCESS_KEY);
    println!("secret_key={}", s3server::SECRET_KEY);
    let _ = std::io::stdout().flush();
    let (requests, bytes_out) = (server.requests.clone(), server.bytes_out.clone());
    let (req_file, bytes_file) = (dir.join("requests"), dir.join("bytes_out"));
    std::thread::spawn(move || {
        loop {
            let _ = std::fs::write(&bytes_file, bytes_out.load(Ordering::Relaxed).to_string());
            let _ = std::fs::write(&req_file, requests.load(Ordering::Relaxed).to_string());
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    });
    // Serve until whoever started us closes our stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}
