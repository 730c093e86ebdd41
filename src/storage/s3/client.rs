//! Building the client: credentials, TLS (https only), the endpoint, the
//! region and data residency.

use super::*;

/// Reads static keys from a credentials file, refusing one others can read.
pub(super) fn static_credentials(
    path: &Path,
) -> Result<aws_sdk_s3::config::Credentials, SetupError> {
    use std::os::unix::fs::PermissionsExt;
    let unreadable = |error| SetupError::CredentialsUnreadable {
        path: path.to_path_buf(),
        error,
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(SetupError::CredentialsOpen {
            path: path.to_path_buf(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    let get = |name: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().trim_matches('"').to_string())
    };
    let (Some(id), Some(secret)) = (get("aws_access_key_id"), get("aws_secret_access_key")) else {
        return Err(SetupError::CredentialsIncomplete {
            path: path.to_path_buf(),
        });
    };
    Ok(aws_sdk_s3::config::Credentials::new(
        id,
        secret,
        get("aws_session_token"),
        None,
        "coffer-credentials-file",
    ))
}

pub(super) fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

pub(super) fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Notes the server's clock from each answer's `Date` header: what a
/// writer needs to know when storage recorded its write, without a listing
/// to ask (the suspect-snapshot check, docs/IMMUTABILITY.md).
#[derive(Debug, Default, Clone)]
pub(super) struct ServerClock(pub(super) std::sync::Arc<std::sync::Mutex<Option<jiff::Timestamp>>>);

impl ServerClock {
    pub(super) fn last(&self) -> Option<jiff::Timestamp> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Intercept for ServerClock {
    fn name(&self) -> &'static str {
        "coffer-server-clock"
    }
    fn read_before_deserialization(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeDeserializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // An HTTP date ("Mon, 07 Dec 2026 07:26:30 GMT"); one that does not
        // parse is left out, and the writer lists the object instead.
        let date = context
            .response()
            .headers()
            .get("date")
            .and_then(|d| jiff::fmt::rfc2822::parse(d).ok())
            .map(|z| z.timestamp());
        if let Some(t) = date {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
        }
        Ok(())
    }
}

/// Refuses any request that is not https, whatever the configuration says.
#[derive(Debug)]
pub(super) struct HttpsOnly {
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
pub fn parse_url(url: &str) -> Result<(String, String), SetupError> {
    let rest = url.strip_prefix("s3://").ok_or(SetupError::NotS3)?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !valid {
        return Err(SetupError::BadBucket {
            bucket: bucket.to_string(),
        });
    }
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_string(), prefix))
}

/// What `connect` settles before any request: the bucket, the endpoint
/// (https unless a loopback test endpoint is allowed plain http), the
/// checksum setting, the TLS client with its CA bundle, the credentials file.
pub(super) struct Settings {
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    checksums: Checksums,
    http: aws_sdk_s3::config::SharedHttpClient,
    credentials: Option<aws_sdk_s3::config::Credentials>,
}

impl Settings {
    /// Reads local files only (CA bundle, credentials file); no network.
    pub(super) fn resolve(url: &str, opts: &S3Options) -> Result<Settings, SetupError> {
        let (bucket, prefix) = parse_url(url)?;
        let endpoint = opts
            .endpoint
            .clone()
            .or_else(|| env_nonempty("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env_nonempty("AWS_ENDPOINT_URL"));
        if let Some(ep) = &endpoint {
            if let Some(rest) = ep.strip_prefix("http://") {
                let host = rest.split(['/', ':']).next().unwrap_or("");
                if !(opts.allow_insecure_http && is_loopback(host)) {
                    return Err(SetupError::PlainHttp {
                        endpoint: ep.clone(),
                    });
                }
            } else if !ep.starts_with("https://") {
                return Err(SetupError::EndpointScheme {
                    endpoint: ep.clone(),
                });
            }
        }
        let checksums = resolve_checksums(
            opts.checksums,
            endpoint.is_some(),
            env_nonempty(REQUEST_ENV).as_deref(),
            env_nonempty(RESPONSE_ENV).as_deref(),
        )?;
        let ca = opts
            .ca_bundle
            .clone()
            .or_else(|| env_nonempty("AWS_CA_BUNDLE").map(PathBuf::from));
        // One client for S3 and the credential providers (SSO, STS, IMDS).
        let http = https_client(ca.as_deref())?;
        let credentials = opts
            .credentials_file
            .as_deref()
            .map(static_credentials)
            .transpose()?;
        Ok(Settings {
            bucket,
            prefix,
            endpoint,
            checksums,
            http,
            credentials,
        })
    }
}

/// Checks an `s3://` repository's settings without sending a request
/// (`coffer agent --check --offline`): what `connect` would refuse first.
pub fn check_settings(url: &str, opts: &S3Options) -> Result<(), SetupError> {
    Settings::resolve(url, opts).map(|_| ())
}

impl S3Storage {
    pub async fn connect(url: &str, opts: &S3Options) -> Result<S3Storage, StorageError> {
        let fail = |problem: SetupError| StorageError::Setup {
            location: url.to_string(),
            problem,
        };
        let Settings {
            bucket,
            prefix,
            endpoint,
            checksums,
            http,
            credentials,
        } = Settings::resolve(url, opts).map_err(fail)?;
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
        if let Some(c) = credentials {
            b = b.credentials_provider(c);
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
        let clock = ServerClock::default();
        b = b.interceptor(clock.clone());
        let client = Client::from_conf(b.build());
        let storage = S3Storage {
            client,
            opts: opts.clone(),
            bucket,
            prefix,
            endpoint: endpoint.unwrap_or_else(|| "AWS S3".into()),
            checksums,
            write_lock: std::sync::Mutex::new(None),
            clock,
        };
        if !opts.allowed_regions.is_empty() {
            storage.check_residency().await?;
        }
        Ok(storage)
    }

    /// The region the client is set up for (where a new bucket goes).
    pub(super) fn region(&self) -> String {
        self.client
            .config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".into())
    }

    /// The refusal of a bucket in `region` outside `allowed_regions`.
    pub(super) fn not_allowed(&self, what: String) -> StorageError {
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
    pub(super) async fn check_residency(&self) -> Result<(), StorageError> {
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
}

/// The https client (rustls on ring), trusting the system roots plus the
/// PEM file `ca` if given.
pub(super) fn https_client(
    ca: Option<&Path>,
) -> Result<aws_sdk_s3::config::SharedHttpClient, SetupError> {
    use aws_smithy_http_client::tls;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut store = tls::TrustStore::default();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).map_err(|error| SetupError::CaUnreadable {
            path: ca.to_path_buf(),
            error,
        })?;
        // The SDK does not validate the PEM until the first connection (and
        // then panics), so parse it here for a clean error.
        let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| SetupError::CaNotPem {
                path: ca.to_path_buf(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(SetupError::CaEmpty {
                path: ca.to_path_buf(),
            });
        }
        store = store.with_pem_certificate(pem);
    }
    let ctx = tls::TlsContext::builder()
        .with_trust_store(store)
        .build()
        .map_err(|e| SetupError::Tls {
            ca_bundle: ca.is_some(),
            reason: e.to_string(),
        })?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .tls_context(ctx)
        .build_https())
}
