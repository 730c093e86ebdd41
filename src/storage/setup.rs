//! What is wrong with a repository URL or a backend's settings, found before
//! any request is sent: [`super::StorageError::Setup`] carries it. Its
//! text is the whole message (no `source()` chain), as a flat string was.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `s3:/acme`, `file://srv/backup`: `meant` is the URL probably meant.
    #[error(
        "repository URL {url:?} looks mistyped; did you mean {meant:?}? \
         (use s3://bucket/prefix, file:///absolute/path, or a plain path such as ./{})",
        .url.trim_start_matches("./")
    )]
    MistypedUrl { url: String, meant: String },
    /// `backup:2024`: a scheme coffer has no storage for.
    #[error(
        "repository URL {url:?}: {scheme:?} is not a storage coffer knows; \
         use s3://bucket/prefix, file:///absolute/path, or ./{url} for a local folder of that name"
    )]
    UnknownScheme { url: String, scheme: String },
    #[error("not an s3:// URL")]
    NotS3,
    #[error(
        "{bucket:?} is not a valid bucket name (3-63 lowercase letters, digits, '-', '.'): use s3://bucket/prefix"
    )]
    BadBucket { bucket: String },
    #[error(
        "endpoint {endpoint} is plain HTTP; coffer only talks to storage over TLS: use https:// \
         (plain http is allowed only for a loopback test endpoint with allow_insecure_http)"
    )]
    PlainHttp { endpoint: String },
    #[error("endpoint {endpoint} must start with https://")]
    EndpointScheme { endpoint: String },
    #[error("credentials_file {}: {error}", .path.display())]
    CredentialsUnreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "credentials_file {} is readable by others; run `chmod 600 {}`",
        .path.display(),
        .path.display()
    )]
    CredentialsOpen { path: PathBuf },
    #[error(
        "credentials_file {}: needs aws_access_key_id and aws_secret_access_key lines",
        .path.display()
    )]
    CredentialsIncomplete { path: PathBuf },
    /// `AWS_REQUEST_CHECKSUM_CALCULATION` or `AWS_RESPONSE_CHECKSUM_VALIDATION`
    /// set to something else than the two values the SDK knows.
    #[error("{name}={value:?}: use when_supported or when_required (or unset it)")]
    ChecksumEnv { name: &'static str, value: String },
    #[error("ca_bundle {}: {error}", .path.display())]
    CaUnreadable {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("ca_bundle {}: not a PEM certificate file: {reason}", .path.display())]
    CaNotPem { path: PathBuf, reason: String },
    #[error("ca_bundle {}: no certificate in it", .path.display())]
    CaEmpty { path: PathBuf },
    /// The TLS context could not be built (`ca_bundle`: one was named).
    #[error(
        "cannot set up TLS with the system's CA certificates{}: {reason}; check /etc/ssl/certs (package ca-certificates){}",
        if *.ca_bundle { " and ca_bundle" } else { "" },
        if *.ca_bundle { " and the ca_bundle file" } else { "" }
    )]
    Tls { ca_bundle: bool, reason: String },
    /// `COFFER_FAULTS` (a fault drill) does not parse.
    #[error(transparent)]
    Faults(#[from] super::fault::FaultSpecError),
}

#[cfg(test)]
mod tests {
    use super::SetupError;
    use std::path::PathBuf;

    /// The messages are the ones the strings said before the enum.
    #[test]
    fn messages_name_the_setting_and_the_fix() {
        let path = PathBuf::from("/etc/coffer/creds");
        let e = SetupError::CredentialsOpen { path: path.clone() };
        assert_eq!(
            e.to_string(),
            "credentials_file /etc/coffer/creds is readable by others; run `chmod 600 /etc/coffer/creds`"
        );
        let e = SetupError::CaUnreadable {
            path,
            error: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            e.to_string(),
            "ca_bundle /etc/coffer/creds: No such file or directory (os error 2)"
        );
        let tls = |ca_bundle| {
            SetupError::Tls {
                ca_bundle,
                reason: "bad".into(),
            }
            .to_string()
        };
        assert_eq!(
            tls(false),
            "cannot set up TLS with the system's CA certificates: bad; check /etc/ssl/certs (package ca-certificates)"
        );
        assert_eq!(
            tls(true),
            "cannot set up TLS with the system's CA certificates and ca_bundle: bad; check /etc/ssl/certs (package ca-certificates) and the ca_bundle file"
        );
        let e = SetupError::MistypedUrl {
            url: "./s3:acme".into(),
            meant: "s3://acme".into(),
        };
        assert_eq!(
            e.to_string(),
            r#"repository URL "./s3:acme" looks mistyped; did you mean "s3://acme"? (use s3://bucket/prefix, file:///absolute/path, or a plain path such as ./s3:acme)"#
        );
    }
}
