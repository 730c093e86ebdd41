//! The test server's quirk switches ([`Quirks`]) do what they claim, seen
//! through the AWS SDK with its own defaults (CRC32 checksums on every
//! upload, aws-chunked trailers on streamed ones): each switch changes the
//! server's answer, and off, the server answers as s3s-fs does.

use crate::s3server::{ACCESS_KEY, Quirks, S3Server, SECRET_KEY};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use std::path::Path;

/// An SDK client for `server` with the SDK's default checksum behaviour
/// (`when_supported`), whatever coffer chooses.
fn sdk_client(server: &S3Server) -> Client {
    use aws_smithy_http_client::tls;
    let pem = std::fs::read(&server.ca_pem).unwrap();
    let store = tls::TrustStore::empty().with_pem_certificate(pem);
    let ctx = tls::TlsContext::builder()
        .with_trust_store(store)
        .build()
        .unwrap();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .tls_context(ctx)
        .build_https();
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(server.endpoint())
        .force_path_style(true)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "test",
        ))
        .http_client(http)
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenSupported)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenSupported)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    Client::from_conf(conf)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A server with `quirks`, a bucket `quirk` and a client.
fn server(dir: &Path, quirks: Quirks) -> (S3Server, Client) {
    let server = S3Server::start_with(dir, quirks);
    server.create_bucket("quirk");
    let client = sdk_client(&server);
    (server, client)
}

/// `If-None-Match: *` twice on one key: (first accepted, second accepted, content).
async fn create_twice(client: &Client) -> (bool, bool, Vec<u8>) {
    let put = |body: &'static [u8]| {
        client
            .put_object()
            .bucket("quirk")
            .key("lock")
            .if_none_match("*")
            .body(ByteStream::from_static(body))
            .send()
    };
    let first = put(b"first").await;
    let second = put(b"second").await;
    if let Err(e) = &second {
        let code = aws_sdk_s3::error::ProvideErrorMetadata::code(e);
        assert_eq!(code, Some("PreconditionFailed"), "{e:?}");
    }
    let got = client
        .get_object()
        .bucket("quirk")
        .key("lock")
        .send()
        .await
        .unwrap();
    let body = got.body.collect().await.unwrap().to_vec();
    (first.is_ok(), second.is_ok(), body)
}

#[test]
fn ignore_if_none_match_lets_a_second_create_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (_plain, client) = server(&dir.path().join("plain"), Quirks::default());
    assert_eq!(
        rt.block_on(create_twice(&client)),
        (true, false, b"first".to_vec()),
        "s3s-fs refuses the second create"
    );
    let quirks = Quirks {
        ignore_if_none_match: true,
        ..Quirks::default()
    };
    let (_quirky, client) = server(&dir.path().join("quirky"), quirks);
    assert_eq!(
        rt.block_on(create_twice(&client)),
        (true, true, b"second".to_vec()),
        "the condition is ignored: both creates succeed, the second overwrites"
    );
}

/// Uploads 300 KiB from memory (a CRC32 header) and reads bytes 100..200
/// raw (no validation): the 206's `x-amz-checksum-crc32`, if any, and
/// whether the SDK, validating as by default, accepts the range.
async fn ranged_read(client: &Client) -> (Option<String>, Result<Vec<u8>, String>) {
    let data = crate::env::random_bytes(300 * 1024, 5);
    client
        .put_object()
        .bucket("quirk")
        .key("obj")
        .body(ByteStream::from(data.clone()))
        .send()
        .await
        .unwrap();
    let raw = client
        .get_object()
        .bucket("quirk")
        .key("obj")
        .range("bytes=100-199")
        .customize()
        .config_override(
            aws_sdk_s3::config::Builder::default().response_checksum_validation(
                aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
            ),
        )
        .send()
        .await
        .unwrap();
    let header = raw.checksum_crc32().map(str::to_string);
    let validated = client
        .get_object()
        .bucket("quirk")
        .key("obj")
        .range("bytes=100-199")
        .send()
        .await
        .unwrap();
    let body = validated
        .body
        .collect()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(&e).to_string());
    if let Ok(b) = &body {
        assert_eq!(b[..], data[100..200]);
    }
    (header, body)
}

#[test]
fn whole_object_checksum_on_ranges_fails_the_sdks_validation() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (_plain, client) = server(&dir.path().join("plain"), Quirks::default());
    let (header, body) = rt.block_on(ranged_read(&client));
    assert_eq!(header, None, "s3s-fs sends no checksum with a range");
    assert!(body.is_ok(), "{body:?}");

    let quirks = Quirks {
        whole_object_checksum_on_ranges: true,
        ..Quirks::default()
    };
    let (_quirky, client) = server(&dir.path().join("quirky"), quirks);
    let (header, body) = rt.block_on(ranged_read(&client));
    assert!(header.is_some(), "the 206 carries the whole object's CRC32");
    let err = body.expect_err("the SDK checks the range against the whole object's CRC");
    assert!(err.to_lowercase().contains("checksum"), "{err}");
}

/// A 2.5 MiB PutObject streamed from a file: aws-chunked with a trailing
/// CRC32 under the SDK's defaults. Returns the answer and what reads back.
async fn streamed_put(client: &Client, dir: &Path) -> (Result<(), String>, Option<Vec<u8>>) {
    let data = crate::env::random_bytes(2_500_000, 9);
    let file = dir.join("upload.bin");
    std::fs::write(&file, &data).unwrap();
    let sent = client
        .put_object()
        .bucket("quirk")
        .key("pack")
        .body(ByteStream::from_path(&file).await.unwrap())
        .send()
        .await;
    let sent = sent.map(|_| ()).map_err(|e| {
        let status = e.raw_response().map(|r| r.status().as_u16());
        format!("{status:?} {}", aws_sdk_s3::error::DisplayErrorContext(&e))
    });
    let got = client.get_object().bucket("quirk").key("pack").send().await;
    let back = match got {
        Ok(o) => Some(o.body.collect().await.unwrap().to_vec()),
        Err(_) => None,
    };
    if sent.is_ok() && back.as_deref() == Some(&data[..]) {
        return (sent, None); // stored as sent
    }
    (sent, back)
}

#[test]
fn reject_trailing_checksums_answers_411() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let (_plain, client) = server(&dir.path().join("plain"), Quirks::default());
    let (sent, changed) = rt.block_on(streamed_put(&client, dir.path()));
    assert!(sent.is_ok() && changed.is_none(), "{sent:?}");

    let quirks = Quirks {
        reject_trailing_checksums: true,
        ..Quirks::default()
    };
    let (_quirky, client) = server(&dir.path().join("quirky"), quirks);
    let (sent, back) = rt.block_on(streamed_put(&client, dir.path()));
    let err = sent.expect_err("a trailing checksum is refused");
    assert!(
        err.starts_with("Some(411)") && err.contains("MissingContentLength"),
        "{err}"
    );
    assert_eq!(back, None, "nothing was stored");
}

#[test]
fn store_chunk_framing_stores_the_framing_and_says_200() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let quirks = Quirks {
        store_chunk_framing: true,
        ..Quirks::default()
    };
    let (_quirky, client) = server(&dir.path().join("quirky"), quirks);
    let (sent, back) = rt.block_on(streamed_put(&client, dir.path()));
    assert!(sent.is_ok(), "the upload is answered 200: {sent:?}");
    let back = back.expect("what reads back differs from what was sent");
    assert!(back.len() > 2_500_000, "{} bytes", back.len());
    let head = String::from_utf8_lossy(&back[..back.len().min(16)]).to_string();
    let size = head.split("\r\n").next().unwrap();
    assert!(
        !size.is_empty() && size.chars().all(|c| c.is_ascii_hexdigit()),
        "the object starts with a chunk size line: {head:?}"
    );
    let tail = String::from_utf8_lossy(&back[back.len() - 64..]).to_string();
    assert!(tail.contains("x-amz-checksum-crc32:"), "{tail:?}");
}
