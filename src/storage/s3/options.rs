//! What the profile and the environment say about reaching the bucket, and
//! the checksum behaviour they resolve to.

use super::*;

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
    /// `[s3] object_lock`: the repository keeps its history under S3 Object
    /// Lock in this mode (`init --object-lock`; a bucket created by
    /// `--create-bucket` gets versioning and Object Lock).
    pub object_lock: Option<crate::storage::LockMode>,
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
pub(super) struct Checksums {
    /// Uploads carry a CRC32.
    pub(super) send: bool,
    /// Whole-object downloads are checked against the stored checksum.
    pub(super) validate: bool,
    /// What decided `send`, for messages.
    pub(super) from: &'static str,
}

pub(super) const REQUEST_ENV: &str = "AWS_REQUEST_CHECKSUM_CALCULATION";
pub(super) const RESPONSE_ENV: &str = "AWS_RESPONSE_CHECKSUM_VALIDATION";

/// Precedence: the SDK's environment variables, then `[s3] checksums`, then
/// the default for the endpoint (`auto`). The SDK's shared-config keys of
/// the same names are not read: coffer sets the values in code, which
/// overrides them.
pub(super) fn resolve_checksums(
    setting: ChecksumSetting,
    custom_endpoint: bool,
    request_env: Option<&str>,
    response_env: Option<&str>,
) -> Result<Checksums, SetupError> {
    let parse = |name: &'static str, v: &str| match v.trim().to_ascii_lowercase().as_str() {
        "when_supported" => Ok(true),
        "when_required" => Ok(false),
        _ => Err(SetupError::ChecksumEnv {
            name,
            value: v.to_string(),
        }),
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
