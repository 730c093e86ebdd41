//! S3 failures as one-line [`StorageError`]s naming the operation, the key
//! or bucket, the provider's code and what to do.

use super::*;

impl S3Storage {
    /// What to tell the operator about coffer's upload checksums, when a
    /// server refuses them.
    pub(super) fn checksum_mismatch(&self, label: &str, op: &str) -> String {
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
    pub(super) fn body_error(&self, key: &str, e: impl std::error::Error) -> StorageError {
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
    pub(super) async fn why_403(&self, head: StorageError) -> StorageError {
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
    pub(super) fn permission(&self, op: &str) -> String {
        let (perm, bucket_level) = match op {
            "GetObject" | "HeadObject" => ("s3:GetObject", false),
            "ListObjectsV2" | "HeadBucket" => ("s3:ListBucket", true),
            "DeleteObject" | "DeleteObjects" => ("s3:DeleteObject", false),
            "CreateBucket" => ("s3:CreateBucket", true),
            "GetBucketLocation" => ("s3:GetBucketLocation", true),
            "AbortMultipartUpload" => ("s3:AbortMultipartUpload", false),
            "PutObjectRetention" => ("s3:PutObjectRetention", false),
            "DeleteObjectVersion" => ("s3:DeleteObjectVersion", false),
            "ListObjectVersions" => ("s3:ListBucketVersions", true),
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
    pub(super) fn error<E>(
        &self,
        op: &'static str,
        key: &str,
        e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if let SdkError::ServiceError(se) = &e {
            let status = se.raw().status().as_u16();
            let code = se.err().code().unwrap_or("");
            let text = se.err().message().unwrap_or("");
            return self.service_error(op, key, status, code, text);
        }
        let how = match &e {
            SdkError::ConstructionFailure(_) => Failed::Building,
            SdkError::TimeoutError(_) => Failed::TimedOut,
            _ => Failed::Other,
        };
        self.transport_error(op, key, &error_chain(&e), how)
    }

    fn refused(&self, key: &str, message: String) -> StorageError {
        StorageError::Refused {
            location: self.location(),
            key: key.to_string(),
            message,
        }
    }

    fn io_error(&self, key: &str, message: String, transient: bool) -> StorageError {
        StorageError::Io {
            location: self.location(),
            key: key.to_string(),
            message,
            transient,
            kind: None,
        }
    }

    /// An answer from the server: its status, error code and message.
    fn service_error(
        &self,
        op: &'static str,
        key: &str,
        status: u16,
        code: &str,
        text: &str,
    ) -> StorageError {
        let refused = |message: String| self.refused(key, message);
        let io = |message: String, transient: bool| self.io_error(key, message, transient);
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
        match (status, code) {
            (_, "NoSuchKey") | (404, "" | "NotFound") => StorageError::NotFound {
                location: self.location(),
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
                        "{label} on {op}: the credentials lack {lacks} (or a bucket policy denies it){}",
                        if op == "DeleteObjectVersion" {
                            "; or the version is under Object Lock, which no one can delete before its date"
                        } else if matches!(op, "DeleteObject" | "DeleteObjects") {
                            "; an append-only agent can not apply retention: set `run_by = \"maintainer\"` in the profile's [retention] and run forget and prune with the maintainer's credentials (docs/IMMUTABILITY.md)"
                        } else {
                            ""
                        }
                    ))
                }
            }
            (_, "QuotaExceeded" | "EntityTooLarge" | "InsufficientStorage") => refused(format!(
                "{label} on {op}: the provider refused the upload: the quota is full; free space or raise it"
            )),
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
            // Throttling and server errors pass; anything else is this request's.
            (s, _) => {
                let what = if text.is_empty() {
                    String::new()
                } else {
                    format!(": {text}")
                };
                let transient = s >= 500 || s == 429 || code == "SlowDown";
                io(format!("{label} on {op}{what}"), transient)
            }
        }
    }

    /// No answer from the server: credentials, DNS, a closed port, TLS, a
    /// request that could not be built, a timeout or a cut connection.
    fn transport_error(
        &self,
        op: &'static str,
        key: &str,
        detail: &str,
        how: Failed,
    ) -> StorageError {
        let refused = |message: String| self.refused(key, message);
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
        if let Failed::Building = how {
            return refused(format!("{op}: the request could not be built: {detail}"));
        }
        let what = if matches!(how, Failed::TimedOut) || lower.contains("timed out") {
            "timed out"
        } else {
            "failed"
        };
        self.io_error(
            key,
            format!("{op} to {} {what}: {detail}", self.endpoint),
            true,
        )
    }
}

/// An error and its causes on one line, each said once (the SDK's Display
/// is "dispatch failure"; its Debug is a dump of hundreds of characters).
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
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

/// How a request that got no answer failed, as far as the SDK tells.
enum Failed {
    Building,
    TimedOut,
    Other,
}
