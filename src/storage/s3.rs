//! S3-compatible object storage over TLS, through `aws-sdk-s3`.
//!
//! Only `https` endpoints are used: a plain `http` endpoint is refused when the
//! backend is built (unless explicitly allowed for a loopback test endpoint),
//! and an interceptor refuses any non-https request as a second line of
//! defence, since the SDK itself would happily talk plain HTTP.

use super::{Cap, ObjectInfo, Storage, StorageError};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, Region, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use std::path::{Path, PathBuf};

mod probe;

/// Where and how to reach the bucket. Empty fields fall back to the standard
/// AWS environment and configuration files.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    pub region: Option<String>,
    /// A custom endpoint (non-AWS providers, tests); `AWS_ENDPOINT_URL_S3` /
    /// `AWS_ENDPOINT_URL` when unset.
    pub endpoint: Option<String>,
    /// Path-style addressing; default: on for custom endpoints, off for AWS.
    pub path_style: Option<bool>,
    /// Extra trusted roots (PEM); `AWS_CA_BUNDLE` when unset.
    pub ca_bundle: Option<PathBuf>,
    /// Allow `http://` — only honoured for a loopback host.
    pub allow_insecure_http: bool,
    /// Attempts per request (SDK retry with exponential backoff and jitter).
    pub max_attempts: u32,
    /// Storage class for new objects (e.g. STANDARD_IA); never an archive
    /// class, which could not be restored from without a thaw.
    pub storage_class: Option<String>,
    /// Server-side encryption on top of age: "AES256" or "aws:kms".
    pub server_side_encryption: Option<String>,
    /// KMS key for "aws:kms".
    pub sse_kms_key_id: Option<String>,
    /// Pack uploads in flight (default 4).
    pub upload_concurrency: usize,
    /// If not empty, the bucket's region must be one of these (data residency).
    pub allowed_regions: Vec<String>,
    /// Files larger than this go up as a multipart upload (default 64 MiB).
    pub multipart_threshold: u64,
    /// Static keys, by file (mode 0600, `aws_access_key_id = …` and
    /// `aws_secret_access_key = …` lines, as in ~/.aws/credentials); unset =
    /// the standard AWS chain.
    pub credentials_file: Option<PathBuf>,
}

/// Reads static keys from a credentials file, refusing one others can read.
fn static_credentials(path: &Path) -> Result<aws_sdk_s3::config::Credentials, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("credentials_file {}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "credentials_file {} is readable by others; run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("credentials_file {}: {e}", path.display()))?;
    let get = |name: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
    };
    let (Some(id), Some(secret)) = (get("aws_access_key_id"), get("aws_secret_access_key")) else {
        return Err(format!(
            "credentials_file {}: needs aws_access_key_id and aws_secret_access_key lines",
            path.display()
        ));
    };
    Ok(aws_sdk_s3::config::Credentials::new(
        id,
        secret,
        get("aws_session_token"),
        None,
        "coffer-credentials-file",
    ))
}

/// Multipart part size; S3 wants at least 5 MiB per part but the last.
const PART_SIZE: u64 = 16 * 1024 * 1024;
/// The read size when streaming a spool file to storage.
const READ_BUFFER: usize = 1 << 20;

pub struct S3Storage {
    client: Client,
    opts: S3Options,
    bucket: String,
    /// Key prefix ending in `/`, or empty.
    prefix: String,
    endpoint: String,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Refuses any request that is not https, whatever the configuration says.
#[derive(Debug)]
struct HttpsOnly {
    allow_loopback_http: bool,
}

impl Intercept for HttpsOnly {
    fn name(&self) -> &'static str {
        "coffer-https-only"
    }
    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let uri = context.request().uri();
        if uri.starts_with("https://") {
            return Ok(());
        }
        let host = uri
            .strip_prefix("http://")
            .and_then(|r| r.split(['/', '?']).next())
            .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host))
            .unwrap_or("");
        if self.allow_loopback_http && is_loopback(host) {
            return Ok(());
        }
        Err(format!("refusing to send a request over plain HTTP to {uri}").into())
    }
}

/// Parses `s3://bucket/prefix`.
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("s3://").ok_or("not an s3:// URL")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !valid {
        return Err(format!(
            "{bucket:?} is not a valid bucket name (3-63 lowercase letters, digits, '-', '.'): use s3://bucket/prefix"
        ));
    }
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_string(), prefix))
}

impl S3Storage {
    pub async fn connect(url: &str, opts: &S3Options) -> Result<S3Storage, StorageError> {
        let fail = |message: String| StorageError::Unavailable {
            location: url.to_string(),
            message,
        };
        let (bucket, prefix) = parse_url(url).map_err(fail)?;
        let endpoint = opts
            .endpoint
            .clone()
            .or_else(|| env_nonempty("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env_nonempty("AWS_ENDPOINT_URL"));
        if let Some(ep) = &endpoint {
            if let Some(rest) = ep.strip_prefix("http://") {
                let host = rest.split(['/', ':']).next().unwrap_or("");
                if !(opts.allow_insecure_http && is_loopback(host)) {
                    return Err(fail(format!(
                        "endpoint {ep} is plain HTTP; coffer only talks to storage over TLS: use https:// \
                         (plain http is allowed only for a loopback test endpoint with allow_insecure_http)"
                    )));
                }
            } else if !ep.starts_with("https://") {
                return Err(fail(format!("endpoint {ep} must start with https://")));
            }
        }
        let ca = opts
            .ca_bundle
            .clone()
            .or_else(|| env_nonempty("AWS_CA_BUNDLE").map(PathBuf::from));
        // One client for S3 and the credential providers (SSO, STS, IMDS).
        let http = https_client(ca.as_deref()).map_err(fail)?;
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http.clone());
        if let Some(r) = &opts.region {
            loader = loader.region(Region::new(r.clone()));
        }
        let sdk = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&sdk);
        if sdk.region().is_none() {
            // Custom providers often ignore the region; the SDK needs one.
            b = b.region(Region::new("us-east-1"));
        }
        if let Some(ep) = &endpoint {
            b = b.endpoint_url(ep.clone());
        }
        if let Some(file) = &opts.credentials_file {
            b = b.credentials_provider(static_credentials(file).map_err(fail)?);
        }
        b = b.force_path_style(opts.path_style.unwrap_or(endpoint.is_some()));
        b = b.http_client(http);
        let attempts = if opts.max_attempts == 0 {
            5
        } else {
            opts.max_attempts
        };
        b = b.retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(attempts),
        );
        b = b.interceptor(HttpsOnly {
            allow_loopback_http: opts.allow_insecure_http,
        });
        let client = Client::from_conf(b.build());
        let storage = S3Storage {
            client,
            opts: opts.clone(),
            bucket,
            prefix,
            endpoint: endpoint.unwrap_or_else(|| "AWS S3".into()),
        };
        if !opts.allowed_regions.is_empty() {
            storage.check_residency().await?;
        }
        Ok(storage)
    }

    /// Refuses a bucket outside the allowed regions (data residency).
    async fn check_residency(&self) -> Result<(), StorageError> {
        let head = self.client.head_bucket().bucket(&self.bucket).send().await;
        let region = match head {
            Ok(h) if h.bucket_region().is_some() => h.bucket_region().map(str::to_string),
            Ok(_) => None,
            Err(e) => match self.error("", e) {
                // A bucket that does not exist yet is checked when it is created.
                StorageError::NotFound { .. } => return Ok(()),
                other => return Err(other),
            },
        };
        let region = match region {
            Some(r) => r,
            None => {
                let loc = self
                    .client
                    .get_bucket_location()
                    .bucket(&self.bucket)
                    .send()
                    .await
                    .map_err(|e| self.error("", e))?;
                // An empty location constraint means us-east-1.
                loc.location_constraint()
                    .map(|c| c.as_str().to_string())
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| "us-east-1".into())
            }
        };
        if self.opts.allowed_regions.iter().any(|r| r == &region) {
            return Ok(());
        }
        Err(StorageError::Io {
            location: self.location(),
            key: String::new(),
            message: format!(
                "bucket {} is in region {region}, which is not in allowed_regions {:?}; refusing to store data there",
                self.bucket, self.opts.allowed_regions
            ),
            transient: false,
            kind: None,
        })
    }

    /// Uploads a large file in parts streamed from disk; aborts on failure so
    /// no orphan parts are billed.
    async fn put_multipart(&self, key: &str, path: &Path, size: u64) -> Result<(), StorageError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let full = self.full_key(key);
        let (class, sse, kms) = self.object_settings();
        let create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .set_storage_class(class)
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms);
        let upload = create.send().await.map_err(|e| self.error(key, e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = async {
            let mut parts = Vec::new();
            let mut offset = 0;
            let mut number = 1;
            while offset < size {
                let len = PART_SIZE.min(size - offset);
                let body = self.file_body(key, path, Some((offset, len))).await?;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(body)
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
                    .map_err(|e| self.error(key, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag().map(str::to_string))
                        .build(),
                );
                offset += len;
                number += 1;
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.error(key, e))
        }
        .await;
        if result.is_err() {
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&full)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        result
    }

    /// A PutObject request with the profile's storage class and encryption.
    /// (Callers disable payload signing: it would SHA-256 every byte before
    /// sending, which TLS, the CRC32 checksum and self-verifying packs make
    /// redundant.)
    fn put_request(
        &self,
        key: &str,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        let (class, sse, kms) = self.object_settings();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_storage_class(class)
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms)
    }

    /// Storage class and server-side encryption for every new object, one
    /// place for single PUTs and multipart uploads alike.
    fn object_settings(
        &self,
    ) -> (
        Option<aws_sdk_s3::types::StorageClass>,
        Option<aws_sdk_s3::types::ServerSideEncryption>,
        Option<String>,
    ) {
        (
            self.opts
                .storage_class
                .as_deref()
                .map(aws_sdk_s3::types::StorageClass::from),
            self.opts
                .server_side_encryption
                .as_deref()
                .map(aws_sdk_s3::types::ServerSideEncryption::from),
            self.opts.sse_kms_key_id.clone(),
        )
    }

    /// An upload body streamed from a spool file, or from `(offset, length)`
    /// of it for a multipart part. Reads of 1 MiB, not the SDK's 64 KiB:
    /// every read is a hand-off to tokio's blocking pool.
    async fn file_body(
        &self,
        key: &str,
        path: &Path,
        range: Option<(u64, u64)>,
    ) -> Result<ByteStream, StorageError> {
        let mut b = ByteStream::read_from().path(path).buffer_size(READ_BUFFER);
        if let Some((offset, len)) = range {
            b = b
                .offset(offset)
                .length(aws_sdk_s3::primitives::Length::Exact(len));
        }
        b.build().await.map_err(|e| self.file_error(key, path, e))
    }

    /// A local spool file could not be read for an upload.
    fn file_error(&self, key: &str, path: &Path, e: impl std::fmt::Display) -> StorageError {
        StorageError::Io {
            location: self.location(),
            key: key.to_string(),
            message: format!("{}: {e}", path.display()),
            transient: false,
            kind: None,
        }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Reads a response body of at most `max` bytes (`Err(length so far)`
    /// once it is longer: a server may send more than it announced), with
    /// room for `announced` bytes made up front.
    async fn collect_capped(
        &self,
        key: &str,
        mut body: ByteStream,
        announced: u64,
        max: u64,
    ) -> Result<Result<Bytes, u64>, StorageError> {
        // Room made up front for what was announced, at most what may come.
        let mut buf = bytes::BytesMut::with_capacity(announced.min(max) as usize);
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| body_error(self.location(), key, e))?
        {
            let len = buf.len() as u64 + chunk.len() as u64;
            if len > max {
                return Ok(Err(len));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Ok(buf.freeze()))
    }

    /// Turns an SDK error into a storage error that names the bucket and the fix.
    fn error<E>(
        &self,
        key: &str,
        e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let location = self.location();
        let detail = DisplayErrorContext(&e).to_string();
        if let SdkError::ServiceError(se) = &e {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            return match (status, code) {
                (_, "NoSuchKey") | (404, "" | "NotFound") => StorageError::NotFound {
                    location,
                    key: key.to_string(),
                },
                (_, "NoSuchBucket") => StorageError::Io {
                    location,
                    key: key.to_string(),
                    message: format!(
                        "bucket {} does not exist; create it, or run `coffer init --create-bucket`",
                        self.bucket
                    ),
                    transient: false,
                    kind: None,
                },
                (
                    _,
                    "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken"
                    | "InvalidToken",
                ) => StorageError::Io {
                    location,
                    key: key.to_string(),
                    message: format!(
                        "the credentials were refused ({code}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE"
                    ),
                    transient: false,
                    kind: None,
                },
                (403, _) | (_, "AccessDenied") => StorageError::Io {
                    location,
                    key: key.to_string(),
                    message: format!(
                        "access denied to bucket {}; check the credentials and the bucket policy",
                        self.bucket
                    ),
                    transient: false,
                    kind: None,
                },
                (_, "QuotaExceeded" | "EntityTooLarge") => StorageError::Io {
                    location,
                    key: key.to_string(),
                    message: format!(
                        "the provider refused the upload ({code}): the quota is full; free space or raise it"
                    ),
                    transient: false,
                    kind: None,
                },
                (s, _) => StorageError::Io {
                    location,
                    key: key.to_string(),
                    message: format!("HTTP {s} {code}: {detail}"),
                    transient: s >= 500 || s == 429 || code == "SlowDown",
                    kind: None,
                },
            };
        }
        let tls = ["certificate", "UnknownIssuer", "InvalidCertificate", "tls"]
            .iter()
            .any(|w| detail.contains(w));
        if tls {
            // The SDK's chain is long; keep the rustls verdict.
            let reason = detail
                .find("invalid peer certificate")
                .map(|i| {
                    let rest = &detail[i..];
                    let end = rest.find([')', ',', '(']).unwrap_or(rest.len());
                    rest[..end].trim().to_string()
                })
                .unwrap_or_else(|| detail.chars().take(200).collect());
            return StorageError::Io {
                location,
                key: key.to_string(),
                message: format!(
                    "TLS to {} failed ({reason}); if the endpoint uses a private CA, give its PEM file as ca_bundle in the profile's [s3] section (or AWS_CA_BUNDLE)",
                    self.endpoint
                ),
                transient: false,
                kind: None,
            };
        }
        StorageError::Io {
            location,
            key: key.to_string(),
            message: format!("cannot reach {}: {detail}", self.endpoint),
            transient: !matches!(e, SdkError::ConstructionFailure(_)),
            kind: None,
        }
    }
}

/// A download that failed while its body was read: a checksum mismatch is
/// damage at the provider (permanent); anything else is a cut connection.
fn body_error(location: String, key: &str, e: impl std::error::Error) -> StorageError {
    let detail = DisplayErrorContext(&e).to_string();
    if detail.to_ascii_lowercase().contains("checksum") {
        return StorageError::Io {
            location,
            key: key.to_string(),
            message:
                "the download does not match the checksum the provider stored: the object was \
                      altered or damaged at the provider; run `coffer check --read-data`"
                    .into(),
            transient: false,
            kind: None,
        };
    }
    StorageError::Io {
        location,
        key: key.to_string(),
        message: format!("download cut off: {detail}"),
        transient: true,
        kind: None,
    }
}

/// The https client (rustls on ring), trusting the system roots plus the
/// PEM file `ca` if given.
fn https_client(ca: Option<&Path>) -> Result<aws_sdk_s3::config::SharedHttpClient, String> {
    use aws_smithy_http_client::tls;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut store = tls::TrustStore::default();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|e| format!("ca_bundle {}: {e}", ca.display()))?;
        // The SDK does not validate the PEM until the first connection (and
        // then panics), so parse it here for a clean error.
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| {
                format!(
                    "ca_bundle {}: not a PEM certificate file: {e}",
                    ca.display()
                )
            })?;
        if certs.is_empty() {
            return Err(format!("ca_bundle {}: no certificate in it", ca.display()));
        }
        store = store.with_pem_certificate(pem);
    }
    let ctx = tls::TlsContext::builder()
        .with_trust_store(store)
        .build()
        .map_err(|e| {
            format!(
                "cannot set up TLS with the system's CA certificates{}: {e}; check /etc/ssl/certs (package ca-certificates){}",
                if ca.is_some() { " and ca_bundle" } else { "" },
                if ca.is_some() { " and the ca_bundle file" } else { "" }
            )
        })?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .tls_context(ctx)
        .build_https())
}

#[async_trait]
impl Storage for S3Storage {
    fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix.trim_end_matches('/'))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.put_request(key)
            .body(ByteStream::from(data))
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error(key, e))
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let threshold = if self.opts.multipart_threshold == 0 {
            64 << 20
        } else {
            self.opts.multipart_threshold
        };
        let size = tokio::fs::metadata(path)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if size > threshold {
            let res = self.put_multipart(key, path, size).await;
            if res.is_ok() {
                let _ = tokio::fs::remove_file(path).await;
            }
            return res;
        }
        // Streams the file from disk: a pack never sits in memory.
        let body = self.file_body(key, path, None).await?;
        let res = self
            .put_request(key)
            .body(body)
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error(key, e));
        if res.is_ok() {
            let _ = tokio::fs::remove_file(path).await;
        }
        res
    }

    async fn create(&self, key: &str, data: Bytes) -> Result<bool, StorageError> {
        let res = self
            .put_request(key)
            .if_none_match("*")
            .body(ByteStream::from(data))
            .customize()
            .disable_payload_signing()
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(se))
                if se.raw().status().as_u16() == 412
                    || matches!(
                        se.err().code(),
                        Some("PreconditionFailed" | "ConditionalRequestConflict")
                    ) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.error(key, e)),
        }
    }

    async fn get_capped(&self, key: &str, cap: Cap) -> Result<Bytes, StorageError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        // Refused on the announced length, before the body is read.
        let announced = out.content_length().unwrap_or(0).max(0) as u64;
        if announced > cap.max {
            return Err(cap.refuse(self.location(), key, announced));
        }
        self.collect_capped(key, out.body, announced, cap.max)
            .await?
            .map_err(|size| cap.refuse(self.location(), key, size))
    }

    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Bytes, StorageError> {
        if length == 0 {
            return Ok(Bytes::new());
        }
        let truncated = |got: String| StorageError::Io {
            location: self.location(),
            key: key.to_string(),
            message: format!(
                "object is truncated: wanted {length} bytes at offset {offset}, {got}"
            ),
            transient: false,
            kind: None,
        };
        let Some(last) = offset.checked_add(length - 1) else {
            return Err(truncated("which lies past any object".into()));
        };
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .range(format!("bytes={offset}-{last}"))
            .send()
            .await
            .map_err(|e| match self.error(key, e) {
                // 416: the range starts past the object's end.
                StorageError::Io { message, .. } if message.contains("InvalidRange") => {
                    truncated("but the object is shorter".into())
                }
                other => other,
            })?;
        let announced = out.content_length().unwrap_or(0).max(0) as u64;
        if announced > length {
            return Err(truncated(format!("the server sends {announced} bytes")));
        }
        let bytes = self
            .collect_capped(key, out.body, announced, length)
            .await?
            .map_err(|got| truncated(format!("the server sent more ({got} bytes)")))?;
        if bytes.len() as u64 != length {
            return Err(truncated(format!("got {}", bytes.len())));
        }
        Ok(bytes)
    }

    async fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(h) => Ok(Some(h.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => match self.error(key, e) {
                StorageError::NotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error(prefix, e))?;
            for o in page.contents() {
                let Some(k) = o.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                out.push(ObjectInfo {
                    key: k.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: o
                        .last_modified()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), 0)),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| match self.error(key, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            })
    }

    async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        for batch in keys.chunks(1000) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(self.full_key(k)).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StorageError::Unavailable {
                    location: self.location(),
                    message: e.to_string(),
                })?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StorageError::Unavailable {
                    location: self.location(),
                    message: e.to_string(),
                })?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.error(&batch[0], e))?;
            // Per-key failures come back in the body, not as an HTTP error.
            if let Some(err) = out.errors().iter().find(|e| e.code() != Some("NoSuchKey")) {
                return Err(StorageError::Io {
                    location: self.location(),
                    key: err.key().unwrap_or_default().to_string(),
                    message: format!(
                        "delete refused: {} {}",
                        err.code().unwrap_or_default(),
                        err.message().unwrap_or_default()
                    ),
                    transient: err.code() == Some("InternalError")
                        || err.code() == Some("SlowDown"),
                    kind: None,
                });
            }
        }
        Ok(())
    }

    fn upload_concurrency(&self) -> usize {
        if self.opts.upload_concurrency == 0 {
            4
        } else {
            self.opts.upload_concurrency
        }
    }

    /// A request costs tens of milliseconds of round trip and server work:
    /// keep several in flight, and bridge gaps that take about as long to
    /// transfer as a request costs.
    fn read_concurrency(&self) -> usize {
        8
    }
    fn read_gap(&self) -> u64 {
        1024 * 1024
    }

    async fn create_location(&self) -> Result<(), StorageError> {
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the default and must not be named as a constraint.
        let region = self.client.config().region().map(|r| r.to_string());
        if let Some(r) = region.filter(|r| r != "us-east-1") {
            req = req.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                        r.as_str(),
                    ))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => {}
            Err(SdkError::ServiceError(se))
                if matches!(se.err().code(), Some("BucketAlreadyOwnedByYou")) => {}
            Err(e) => return Err(self.error("", e)),
        }
        if !self.opts.allowed_regions.is_empty() {
            self.check_residency().await?;
        }
        Ok(())
    }

    async fn exists(&self) -> Result<bool, StorageError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) => match self.error("", e) {
                StorageError::NotFound { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    // The capability probe's hooks (s3/probe.rs).
    fn multipart_threshold(&self) -> Option<u64> {
        Some(self.threshold())
    }
    fn upload_settings(&self) -> String {
        format!("multipart above {} bytes", self.threshold())
    }
    async fn range_checksum(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Option<String>, StorageError> {
        self.probe_range_checksum(key, offset, length).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_buckets_are_refused() {
        assert_eq!(
            parse_url("s3://my-bucket").unwrap(),
            ("my-bucket".into(), String::new())
        );
        assert_eq!(
            parse_url("s3://my-bucket/hosts/web-1/").unwrap(),
            ("my-bucket".into(), "hosts/web-1/".into())
        );
        assert!(parse_url("s3://My_Bucket/x").is_err());
        assert!(parse_url("s3://ab").is_err());
    }

    #[test]
    fn loopback_is_recognised() {
        for h in ["localhost", "127.0.0.1", "127.3.2.1", "[::1]"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["example.com", "10.0.0.1", "192.168.1.1"] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
