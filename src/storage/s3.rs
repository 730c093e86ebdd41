//! S3-compatible object storage over TLS, through `aws-sdk-s3`.
//!
//! Only `https` endpoints are used: a plain `http` endpoint is refused when the
//! backend is built (unless explicitly allowed for a loopback test endpoint),
//! and an interceptor refuses any non-https request as a second line of
//! defence, since the SDK itself would happily talk plain HTTP.
//!
//! Checksums: one setting ([`ChecksumSetting`], `[s3] checksums`) decides
//! for every upload alike (packs streamed from spool files, objects put from
//! memory, multipart parts), through one upload path ([`S3Storage::upload`]).
//! Ranged reads never validate a checksum: a server may send the whole
//! object's with a part of it, and the pack and age layers authenticate
//! every blob anyway.
//!
//! Retries: the SDK's are off; [`super::Retry`] is the one retry layer.

use super::{Cap, ObjectInfo, Storage, StorageError};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, Region, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
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
    /// Attempts per request, by coffer's one retry layer ([`super::Retry`]:
    /// exponential backoff with jitter); 0 = [`super::DEFAULT_ATTEMPTS`].
    pub max_attempts: u32,
    /// Upload checksums and download validation (`[s3] checksums`).
    pub checksums: ChecksumSetting,
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

/// `[s3] checksums`: whether uploads carry a CRC32 (a header from memory, an
/// aws-chunked trailer from a file) and whole-object downloads are checked
/// against the provider's stored checksum. The SDK's own names for the two
/// behaviours; `AWS_REQUEST_CHECKSUM_CALCULATION` and
/// `AWS_RESPONSE_CHECKSUM_VALIDATION` still override it, as the SDK
/// documents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChecksumSetting {
    /// `when_supported` on AWS (no custom endpoint); `when_required` on a
    /// custom endpoint, where many providers refuse or mis-store aws-chunked
    /// uploads and some send whole-object checksums with ranges.
    #[default]
    Auto,
    /// The SDK's default since aws-sdk-s3 1.69: CRC32 on every upload,
    /// validation of every whole-object download.
    WhenSupported,
    /// Only where an operation requires one (DeleteObjects): no aws-chunked
    /// trailers, no `x-amz-checksum-mode`.
    WhenRequired,
}

impl ChecksumSetting {
    pub const NAMES: &'static str = "\"auto\", \"when_supported\" or \"when_required\"";

    pub fn as_str(&self) -> &'static str {
        match self {
            ChecksumSetting::Auto => "auto",
            ChecksumSetting::WhenSupported => "when_supported",
            ChecksumSetting::WhenRequired => "when_required",
        }
    }
}

impl std::str::FromStr for ChecksumSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(ChecksumSetting::Auto),
            "when_supported" => Ok(ChecksumSetting::WhenSupported),
            "when_required" => Ok(ChecksumSetting::WhenRequired),
            _ => Err(format!("{s:?}: use {}", ChecksumSetting::NAMES)),
        }
    }
}

/// The checksum behaviour in force, resolved from the setting, the
/// environment and the endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Checksums {
    /// Uploads carry a CRC32.
    send: bool,
    /// Whole-object downloads are checked against the stored checksum.
    validate: bool,
    /// What decided `send`, for messages.
    from: &'static str,
}

const REQUEST_ENV: &str = "AWS_REQUEST_CHECKSUM_CALCULATION";
const RESPONSE_ENV: &str = "AWS_RESPONSE_CHECKSUM_VALIDATION";

/// Precedence: the SDK's environment variables, then `[s3] checksums`, then
/// the default for the endpoint (`auto`). The SDK's shared-config keys of
/// the same names are not read: coffer sets the values in code, which
/// overrides them.
fn resolve_checksums(
    setting: ChecksumSetting,
    custom_endpoint: bool,
    request_env: Option<&str>,
    response_env: Option<&str>,
) -> Result<Checksums, String> {
    let parse = |name: &str, v: &str| match v.trim().to_ascii_lowercase().as_str() {
        "when_supported" => Ok(true),
        "when_required" => Ok(false),
        _ => Err(format!(
            "{name}={v:?}: use when_supported or when_required (or unset it)"
        )),
    };
    let request = request_env.map(|v| parse(REQUEST_ENV, v)).transpose()?;
    let response = response_env.map(|v| parse(RESPONSE_ENV, v)).transpose()?;
    let (base, from) = match setting {
        ChecksumSetting::Auto if custom_endpoint => (false, "the default for a custom endpoint"),
        ChecksumSetting::Auto => (true, "the default for AWS"),
        ChecksumSetting::WhenSupported => (true, "[s3] checksums"),
        ChecksumSetting::WhenRequired => (false, "[s3] checksums"),
    };
    Ok(Checksums {
        send: request.unwrap_or(base),
        validate: response.unwrap_or(base),
        from: if request.is_some() { REQUEST_ENV } else { from },
    })
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
    /// The custom endpoint, or "AWS S3".
    endpoint: String,
    checksums: Checksums,
}

/// What an upload sends: bytes in memory, or a spool file, whole or the
/// `(offset, length)` of one multipart part.
enum Payload<'a> {
    Memory(Bytes),
    File(&'a Path, Option<(u64, u64)>),
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
    /// A request costs tens of milliseconds of round trip and server work:
    /// keep several in flight (8 reads; 4 uploads unless the profile says),
    /// and bridge gaps that take about as long to transfer as a request
    /// costs (1 MiB). The upload paths and checksum settings are what the
    /// capability probe records (s3/probe.rs).
    pub fn tuning(&self) -> super::Tuning {
        super::Tuning {
            spool_dir: None,
            upload_concurrency: match self.opts.upload_concurrency {
                0 => 4,
                n => n,
            },
            read_concurrency: 8,
            read_gap: 1024 * 1024,
            multipart_threshold: Some(self.threshold()),
            upload_settings: self.probe_settings(),
            upload_hint: Some(self.probe_upload_hint()),
        }
    }

    pub async fn connect(url: &str, opts: &S3Options) -> Result<S3Storage, StorageError> {
        let fail = |message: String| StorageError::Refused {
            location: url.to_string(),
            key: String::new(),
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
        let checksums = resolve_checksums(
            opts.checksums,
            endpoint.is_some(),
            env_nonempty(REQUEST_ENV).as_deref(),
            env_nonempty(RESPONSE_ENV).as_deref(),
        )
        .map_err(fail)?;
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
        // One retry layer: coffer's (storage::Retry), around every request.
        b = b.retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled());
        use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
        b = b
            .request_checksum_calculation(if checksums.send {
                RequestChecksumCalculation::WhenSupported
            } else {
                RequestChecksumCalculation::WhenRequired
            })
            .response_checksum_validation(if checksums.validate {
                ResponseChecksumValidation::WhenSupported
            } else {
                ResponseChecksumValidation::WhenRequired
            });
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
            checksums,
        };
        if !opts.allowed_regions.is_empty() {
            storage.check_residency().await?;
        }
        Ok(storage)
    }

    /// The region the client is set up for (where a new bucket goes).
    fn region(&self) -> String {
        self.client
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into())
    }

    /// The refusal of a bucket in `region` outside `allowed_regions`.
    fn not_allowed(&self, what: String) -> StorageError {
        StorageError::Refused {
            location: self.location(),
            key: String::new(),
            message: format!(
                "{what}, which is not in allowed_regions {:?}; refusing to store data there \
                 (set region in the profile's [s3] section, or AWS_REGION, to an allowed region)",
                self.opts.allowed_regions
            ),
        }
    }

    /// Refuses a bucket outside the allowed regions (data residency).
    async fn check_residency(&self) -> Result<(), StorageError> {
        let head = self.client.head_bucket().bucket(&self.bucket).send().await;
        let region = match head {
            Ok(h) if h.bucket_region().is_some() => h.bucket_region().map(str::to_string),
            Ok(_) => None,
            Err(e) => match self.error("HeadBucket", "", e) {
                // A bucket that does not exist yet is checked before it is created.
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
                    .map_err(|e| self.error("GetBucketLocation", "", e))?;
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
        Err(self.not_allowed(format!("bucket {} is in region {region}", self.bucket)))
    }

    /// The body of an upload. A spool file is streamed, in reads of 1 MiB,
    /// not the SDK's 64 KiB: every read is a hand-off to tokio's blocking
    /// pool.
    async fn body(&self, key: &str, payload: &Payload<'_>) -> Result<ByteStream, StorageError> {
        match payload {
            Payload::Memory(data) => Ok(ByteStream::from(data.clone())),
            Payload::File(path, range) => {
                let mut b = ByteStream::read_from().path(path).buffer_size(READ_BUFFER);
                if let Some((offset, len)) = range {
                    b = b
                        .offset(*offset)
                        .length(aws_sdk_s3::primitives::Length::Exact(*len));
                }
                b.build().await.map_err(|e| self.file_error(key, path, e))
            }
        }
    }

    /// The checksum algorithm named on multipart requests: AWS wants the
    /// same one on CreateMultipartUpload, each UploadPart and (per part) on
    /// CompleteMultipartUpload, or none anywhere.
    fn multipart_algorithm(&self) -> Option<aws_sdk_s3::types::ChecksumAlgorithm> {
        self.checksums
            .send
            .then_some(aws_sdk_s3::types::ChecksumAlgorithm::Crc32)
    }

    /// The one upload path of a single object: packs streamed from spool
    /// files and objects put from memory alike (index, snapshots, keyring,
    /// damage records, audit, lock, copies), with the storage class,
    /// encryption and checksum mode of the profile. With `create_only`, the
    /// object is stored only if the key is free (`If-None-Match: *`), and
    /// Ok(false) says it was not. Payload signing is off: it would SHA-256
    /// every byte before sending, which TLS and self-verifying packs make
    /// redundant.
    async fn upload(
        &self,
        key: &str,
        payload: Payload<'_>,
        create_only: bool,
    ) -> Result<bool, StorageError> {
        let (class, sse, kms) = self.object_settings();
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_storage_class(class)
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms)
            .body(self.body(key, &payload).await?);
        if create_only {
            req = req.if_none_match("*");
        }
        match req.customize().disable_payload_signing().send().await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(se))
                if create_only
                    && (se.raw().status().as_u16() == 412
                        || matches!(
                            se.err().code(),
                            Some("PreconditionFailed" | "ConditionalRequestConflict")
                        )) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.error("PutObject", key, e)),
        }
    }

    /// Uploads a large file in parts streamed from disk, through the same
    /// body and checksum choices as [`S3Storage::upload`]; aborts on failure
    /// so no orphan parts are billed.
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
            .set_ssekms_key_id(kms)
            .set_checksum_algorithm(self.multipart_algorithm());
        let upload = create
            .send()
            .await
            .map_err(|e| self.error("CreateMultipartUpload", key, e))?;
        let upload_id = upload.upload_id().unwrap_or_default().to_string();
        let result = async {
            let mut parts = Vec::new();
            let mut offset = 0;
            let mut number = 1;
            while offset < size {
                let len = PART_SIZE.min(size - offset);
                let body = self
                    .body(key, &Payload::File(path, Some((offset, len))))
                    .await?;
                let part = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .set_checksum_algorithm(self.multipart_algorithm())
                    .body(body)
                    .customize()
                    .disable_payload_signing()
                    .send()
                    .await
                    .map_err(|e| self.error("UploadPart", key, e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(part.e_tag().map(str::to_string))
                        // Only some servers answer with the part's checksum.
                        .set_checksum_crc32(
                            part.checksum_crc32()
                                .filter(|_| self.checksums.send)
                                .map(str::to_string),
                        )
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
                .map_err(|e| self.error("CompleteMultipartUpload", key, e))
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
        while let Some(chunk) = body.try_next().await.map_err(|e| self.body_error(key, e))? {
            let len = buf.len() as u64 + chunk.len() as u64;
            if len > max {
                return Ok(Err(len));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(Ok(buf.freeze()))
    }

    /// What to tell the operator about coffer's upload checksums, when a
    /// server refuses them.
    fn checksum_mismatch(&self, label: &str, op: &str) -> String {
        let how = if self.checksums.from == REQUEST_ENV {
            format!("unset {REQUEST_ENV} or set it to when_required")
        } else {
            "set `checksums = \"when_required\"` in the profile's [s3] section".to_string()
        };
        format!(
            "{label} on {op}: the server's checksum mode does not match coffer's \
             (CRC32 checksums in aws-chunked trailers or headers, on by {}): {how} \
             (docs/PROVIDERS.md)",
            self.checksums.from
        )
    }

    /// A download that failed while its body was read: a checksum mismatch
    /// means the bytes changed at the provider after they were stored
    /// (permanent, the object's own fault); anything else is a cut
    /// connection.
    fn body_error(&self, key: &str, e: impl std::error::Error) -> StorageError {
        let detail = error_chain(&e);
        if detail.to_ascii_lowercase().contains("checksum") {
            return StorageError::Io {
                location: self.location(),
                key: key.to_string(),
                message: "the downloaded bytes do not match the checksum the provider stored \
                          when the object was uploaded: the bytes changed at the provider \
                          (damaged or altered there); run `coffer check --read-data`"
                    .into(),
                transient: false,
                kind: None,
            };
        }
        StorageError::Io {
            location: self.location(),
            key: key.to_string(),
            message: format!("download cut off: {detail}"),
            transient: true,
            kind: None,
        }
    }

    /// A HEAD answer has no body, so a 403 to one does not say whether the
    /// secret is wrong or a permission missing: one ListObjectsV2 (whose
    /// answer has a body) asks. `head` is returned if it tells nothing more.
    async fn why_403(&self, head: StorageError) -> StorageError {
        let listed = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .max_keys(1)
            .send()
            .await;
        match listed {
            Err(e @ SdkError::ServiceError(_))
                if ProvideErrorMetadata::code(&e).is_some_and(|c| c != "AccessDenied") =>
            {
                self.error("ListObjectsV2", "", e)
            }
            _ => head,
        }
    }

    /// What an access denial lacks: the permission `op` needs, and where.
    fn permission(&self, op: &str) -> String {
        let (perm, bucket_level) = match op {
            "GetObject" | "HeadObject" => ("s3:GetObject", false),
            "ListObjectsV2" | "HeadBucket" => ("s3:ListBucket", true),
            "DeleteObject" | "DeleteObjects" => ("s3:DeleteObject", false),
            "CreateBucket" => ("s3:CreateBucket", true),
            "GetBucketLocation" => ("s3:GetBucketLocation", true),
            "AbortMultipartUpload" => ("s3:AbortMultipartUpload", false),
            _ => ("s3:PutObject", false),
        };
        if bucket_level {
            format!("{perm} on bucket {}", self.bucket)
        } else {
            format!("{perm} on {}/*", self.location())
        }
    }

    /// Turns an SDK error into a storage error of one line that names the
    /// operation, the provider's code and what to do. Refusals that no retry
    /// can change (credentials, permissions, a missing bucket, DNS, a closed
    /// port, TLS, a checksum mode the server does not take) are
    /// [`StorageError::Refused`]; throttling, 5xx and cut connections are
    /// transient.
    fn error<E>(
        &self,
        op: &'static str,
        key: &str,
        e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let location = self.location();
        let refused = |message: String| StorageError::Refused {
            location: location.clone(),
            key: key.to_string(),
            message,
        };
        let io = |message: String, transient: bool| StorageError::Io {
            location: location.clone(),
            key: key.to_string(),
            message,
            transient,
            kind: None,
        };
        if let SdkError::ServiceError(se) = &e {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            let text = se.err().message().unwrap_or("");
            let label = if code.is_empty() {
                format!("{status}")
            } else {
                format!("{status} {code}")
            };
            let creds = "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, \
                         or credentials_file in the profile's [s3] section";
            let upload = matches!(op, "PutObject" | "UploadPart");
            let about_checksums = [
                "checksum",
                "trailer",
                "content-sha256",
                "aws-chunked",
                "streaming",
                "content-encoding",
            ]
            .iter()
            .any(|w| text.to_ascii_lowercase().contains(w));
            return match (status, code) {
                (_, "NoSuchKey") | (404, "" | "NotFound") => StorageError::NotFound {
                    location,
                    key: key.to_string(),
                },
                (_, "NoSuchBucket") => refused(format!(
                    "{label} on {op}: bucket {} does not exist; create it, or run `coffer init --create-bucket`",
                    self.bucket
                )),
                (_, "InvalidAccessKeyId") => refused(format!(
                    "{label} on {op}: the provider does not know this access key id; {creds}"
                )),
                (_, "SignatureDoesNotMatch") => refused(format!(
                    "{label} on {op}: the secret key does not match the access key id; {creds}"
                )),
                (_, "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired") => refused(format!(
                    "{label} on {op}: the session token is expired or invalid; renew the credentials"
                )),
                (_, "RequestTimeTooSkewed") => refused(format!(
                    "{label} on {op}: this machine's clock is off; set it right (NTP) and run it again"
                )),
                (301, _) | (_, "PermanentRedirect" | "AuthorizationHeaderMalformed") => {
                    refused(format!(
                        "{label} on {op}: bucket {} is in another region than {}; set region in \
                         the profile's [s3] section (or AWS_REGION) to the bucket's",
                        self.bucket,
                        self.region()
                    ))
                }
                (403, "" | "AccessDenied" | "AllAccessDisabled") => {
                    let lacks = self.permission(op);
                    if code.is_empty() {
                        // A HEAD answer has no body, so no code to tell a
                        // wrong secret from a missing permission.
                        refused(format!(
                            "{label} on {op}: access denied: the credentials are wrong, or lack {lacks}; {creds}"
                        ))
                    } else {
                        refused(format!(
                            "{label} on {op}: the credentials lack {lacks} (or a bucket policy denies it)"
                        ))
                    }
                }
                (_, "QuotaExceeded" | "EntityTooLarge" | "InsufficientStorage") => {
                    refused(format!(
                        "{label} on {op}: the provider refused the upload: the quota is full; free space or raise it"
                    ))
                }
                (411, _)
                | (
                    _,
                    "MissingContentLength"
                    | "XAmzContentSHA256Mismatch"
                    | "InvalidDigest"
                    | "BadDigest",
                )
                | (400 | 501, "InvalidArgument" | "InvalidRequest" | "NotImplemented")
                    if upload
                        && self.checksums.send
                        && (about_checksums
                            || !matches!(
                                code,
                                "InvalidArgument" | "InvalidRequest" | "NotImplemented"
                            )) =>
                {
                    refused(self.checksum_mismatch(&label, op))
                }
                (s, _) if s >= 500 || s == 429 || code == "SlowDown" => {
                    let what = if text.is_empty() {
                        String::new()
                    } else {
                        format!(": {text}")
                    };
                    io(format!("{label} on {op}{what}"), true)
                }
                (_, _) => {
                    let what = if text.is_empty() {
                        String::new()
                    } else {
                        format!(": {text}")
                    };
                    io(format!("{label} on {op}{what}"), false)
                }
            };
        }
        let detail = error_chain(&e);
        let lower = detail.to_ascii_lowercase();
        let host = self
            .endpoint
            .strip_prefix("https://")
            .or_else(|| self.endpoint.strip_prefix("http://"))
            .map(|h| h.split(['/', ':']).next().unwrap_or(h).to_string())
            .unwrap_or_else(|| format!("the AWS S3 endpoint of region {}", self.region()));
        let credentials = [
            "no providers in chain provided credentials",
            "credentialsnotloaded",
            "failed to load credentials",
            "no credentials",
            "could not load credentials",
        ];
        if credentials.iter().any(|w| lower.contains(w)) {
            return refused(format!(
                "{op}: no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or \
                 AWS_PROFILE, or credentials_file in the profile's [s3] section)"
            ));
        }
        if lower.contains("dns error") || lower.contains("failed to lookup address") {
            return refused(format!(
                "{op}: cannot resolve {host} (DNS); check the endpoint (the profile's [s3] \
                 endpoint, AWS_ENDPOINT_URL) and the network"
            ));
        }
        if lower.contains("connection refused") {
            return refused(format!(
                "{op}: connection refused by {}: nothing listens there; check the endpoint's host and port",
                self.endpoint
            ));
        }
        let tls = ["certificate", "unknownissuer", "invalidcertificate"]
            .iter()
            .any(|w| lower.contains(w));
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
            return refused(format!(
                "{op}: TLS to {} failed ({reason}); if the endpoint uses a private CA, give its PEM \
                 file as ca_bundle in the profile's [s3] section (or AWS_CA_BUNDLE)",
                self.endpoint
            ));
        }
        if let SdkError::ConstructionFailure(_) = &e {
            return refused(format!("{op}: the request could not be built: {detail}"));
        }
        let what = if matches!(e, SdkError::TimeoutError(_)) || lower.contains("timed out") {
            "timed out"
        } else {
            "failed"
        };
        io(format!("{op} to {} {what}: {detail}", self.endpoint), true)
    }
}

/// An error and its causes on one line, each said once (the SDK's Display
/// is "dispatch failure"; its Debug is a dump of hundreds of characters).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let s = err.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        next = err.source();
    }
    parts.join(": ")
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
        self.upload(key, Payload::Memory(data), false)
            .await
            .map(|_| ())
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
        // Streams the file from disk: a pack never sits in memory.
        let res = if size > threshold {
            self.put_multipart(key, path, size).await
        } else {
            self.upload(key, Payload::File(path, None), false)
                .await
                .map(|_| ())
        };
        if res.is_ok() {
            let _ = tokio::fs::remove_file(path).await;
        }
        res
    }

    async fn create(&self, key: &str, data: Bytes) -> Result<bool, StorageError> {
        self.upload(key, Payload::Memory(data), true).await
    }

    async fn get_capped(&self, key: &str, cap: Cap) -> Result<Bytes, StorageError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.error("GetObject", key, e))?;
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
        // No checksum mode and no validation for a range, whatever the
        // setting: a server may send the whole object's checksum with a part
        // of it (Ceph before 2025-02, R2 in 2025-02), and the pack and age
        // layers authenticate every blob read this way.
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .range(format!("bytes={offset}-{last}"))
            .customize()
            .config_override(
                aws_sdk_s3::config::Builder::default().response_checksum_validation(
                    aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
                ),
            )
            .send()
            .await
            .map_err(|e| {
                // 416: the range starts past the object's end.
                if let SdkError::ServiceError(se) = &e
                    && (se.raw().status().as_u16() == 416
                        || se.err().code() == Some("InvalidRange"))
                {
                    return truncated("but the object is shorter".into());
                }
                self.error("GetObject", key, e)
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
            Err(e) => match self.error("HeadObject", key, e) {
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
            let page = page.map_err(|e| self.error("ListObjectsV2", prefix, e))?;
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
            .or_else(|e| match self.error("DeleteObject", key, e) {
                StorageError::NotFound { .. } => Ok(()),
                other => Err(other),
            })
    }

    /// DeleteObjects carries a CRC32 whatever the checksum setting: the SDK
    /// adds one to every request of an operation that requires a checksum.
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
                .map_err(|e| self.error("DeleteObjects", &batch[0], e))?;
            // Per-key failures come back in the body, not as an HTTP error.
            if let Some(err) = out.errors().iter().find(|e| e.code() != Some("NoSuchKey")) {
                let code = err.code().unwrap_or_default();
                let key = err
                    .key()
                    .and_then(|k| k.strip_prefix(&self.prefix))
                    .unwrap_or_default()
                    .to_string();
                let message = format!(
                    "{code} on DeleteObjects: {}",
                    err.message().unwrap_or("delete refused")
                );
                return Err(match code {
                    "InternalError" | "SlowDown" | "ServiceUnavailable" => StorageError::Io {
                        location: self.location(),
                        key,
                        message,
                        transient: true,
                        kind: None,
                    },
                    "AccessDenied" => StorageError::Refused {
                        location: self.location(),
                        message: format!(
                            "AccessDenied on DeleteObjects: the credentials lack {}",
                            self.permission("DeleteObjects")
                        ),
                        key,
                    },
                    _ => StorageError::Io {
                        location: self.location(),
                        key,
                        message,
                        transient: false,
                        kind: None,
                    },
                });
            }
        }
        Ok(())
    }

    /// Creates the bucket in the client's region, once that region is known
    /// to be allowed (data residency is checked before anything is made).
    async fn create_location(&self) -> Result<(), StorageError> {
        let region = self.region();
        if !self.opts.allowed_regions.is_empty()
            && !self.opts.allowed_regions.iter().any(|r| r == &region)
        {
            return Err(self.not_allowed(format!(
                "refusing to create bucket {} in region {region}",
                self.bucket
            )));
        }
        let mut req = self.client.create_bucket().bucket(&self.bucket);
        // us-east-1 is the default and must not be named as a constraint.
        if region != "us-east-1" {
            req = req.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                        region.as_str(),
                    ))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => {}
            Err(SdkError::ServiceError(se))
                if matches!(se.err().code(), Some("BucketAlreadyOwnedByYou")) => {}
            Err(e) => return Err(self.error("CreateBucket", "", e)),
        }
        if !self.opts.allowed_regions.is_empty() {
            // A bucket that was there already may be anywhere.
            self.check_residency().await?;
        }
        Ok(())
    }

    async fn exists(&self) -> Result<bool, StorageError> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(true),
            Err(e) => {
                let bare_403 = matches!(&e, SdkError::ServiceError(se)
                    if se.raw().status().as_u16() == 403 && se.err().code().is_none());
                match self.error("HeadBucket", "", e) {
                    StorageError::NotFound { .. } => Ok(false),
                    other if bare_403 => Err(self.why_403(other).await),
                    other => Err(other),
                }
            }
        }
    }

    // The capability probe's hooks (s3/probe.rs).
    async fn range_checksum(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Option<String>, StorageError> {
        self.probe_range_checksum(key, offset, length).await
    }
    async fn object_lock(&self) -> Result<Option<String>, StorageError> {
        Ok(Some(self.probe_object_lock().await))
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

    #[test]
    fn checksums_default_per_endpoint_and_the_environment_overrides() {
        use ChecksumSetting::*;
        let r = |s, custom, req, resp| resolve_checksums(s, custom, req, resp).unwrap();
        // auto: the SDK's default on AWS, only where required elsewhere.
        let aws = r(Auto, false, None, None);
        assert!(aws.send && aws.validate && aws.from == "the default for AWS");
        let custom = r(Auto, true, None, None);
        assert!(!custom.send && !custom.validate);
        assert_eq!(custom.from, "the default for a custom endpoint");
        // The profile's choice beats the default.
        let on = r(WhenSupported, true, None, None);
        assert!(on.send && on.validate && on.from == "[s3] checksums");
        let off = r(WhenRequired, false, None, None);
        assert!(!off.send && !off.validate);
        // The SDK's variables beat both, each for its own half.
        let env = r(WhenRequired, true, Some("WHEN_SUPPORTED"), None);
        assert!(env.send && !env.validate && env.from == REQUEST_ENV);
        let env = r(WhenSupported, false, None, Some("when_required"));
        assert!(env.send && !env.validate && env.from == "[s3] checksums");
        let e = resolve_checksums(Auto, true, Some("sometimes"), None).unwrap_err();
        assert!(
            e.contains(REQUEST_ENV) && e.contains("when_required"),
            "{e}"
        );
    }

    #[test]
    fn checksum_settings_parse_by_name() {
        for s in [
            ChecksumSetting::Auto,
            ChecksumSetting::WhenSupported,
            ChecksumSetting::WhenRequired,
        ] {
            assert_eq!(s.as_str().parse::<ChecksumSetting>(), Ok(s));
        }
        let e = "off".parse::<ChecksumSetting>().unwrap_err();
        assert!(e.contains("when_required"), "{e}");
    }
}
