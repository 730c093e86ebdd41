//! What the capability probe (`repo::caps`) asks of an S3 server beyond the
//! storage trait's reads and writes: which upload paths exist, and which
//! checksum a ranged read comes with. Kept apart from the transport code.

use super::S3Storage;
use aws_sdk_s3::types::ChecksumMode;

/// The multipart threshold when the profile sets none.
const DEFAULT_THRESHOLD: u64 = 64 << 20;

impl S3Storage {
    /// Files above this go up as multipart uploads (`put_file`).
    pub(super) fn threshold(&self) -> u64 {
        match self.opts.multipart_threshold {
            0 => DEFAULT_THRESHOLD,
            t => t,
        }
    }

    /// What decides how uploads go: the multipart threshold and whether
    /// they carry checksums (aws-chunked trailers from a file).
    pub(super) fn probe_settings(&self) -> String {
        format!(
            "multipart above {} bytes; upload checksums {}",
            self.threshold(),
            if self.checksums.send { "on" } else { "off" }
        )
    }

    /// What to change when an upload does not read back as sent.
    pub(super) fn probe_upload_hint(&self) -> String {
        if !self.checksums.send {
            return "coffer sent it plainly (no checksums, no aws-chunked encoding): this server does not store what it is sent".into();
        }
        let how = if self.checksums.from == super::REQUEST_ENV {
            format!("unset {} or set it to when_required", super::REQUEST_ENV)
        } else {
            "set `checksums = \"when_required\"` in the profile's [s3] section".into()
        };
        format!(
            "coffer sent it aws-chunked with a trailing checksum (checksums on by {}), which this server does not understand: {how} (docs/PROVIDERS.md)",
            self.checksums.from
        )
    }

    /// A ranged GET with `x-amz-checksum-mode: ENABLED`: the first checksum
    /// header of the answer (`"crc32 <value>"`, a part's ending `-N`), or
    /// None. The body is not read, so the SDK validates nothing.
    pub(super) async fn probe_range_checksum(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Option<String>, super::StorageError> {
        let last = offset.saturating_add(length.max(1) - 1);
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .range(format!("bytes={offset}-{last}"))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| self.error("GetObject", key, e))?;
        let found = [
            ("crc64nvme", out.checksum_crc64_nvme()),
            ("crc32", out.checksum_crc32()),
            ("crc32c", out.checksum_crc32_c()),
            ("sha256", out.checksum_sha256()),
            ("sha1", out.checksum_sha1()),
        ]
        .into_iter()
        .find_map(|(name, v)| v.map(|v| format!("{name} {v}")));
        Ok(found)
    }

    /// The bucket's Object Lock configuration, in a few words. A server
    /// without the feature, or credentials without the right to read it,
    /// give "unknown (…)": nothing here depends on it yet, so the probe
    /// records what it could learn and goes on.
    pub(super) async fn probe_object_lock(&self) -> String {
        use aws_sdk_s3::error::ProvideErrorMetadata;
        let asked = self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await;
        match asked {
            Ok(out) => {
                let Some(cfg) = out.object_lock_configuration() else {
                    return "off".into();
                };
                if cfg.object_lock_enabled().map(|e| e.as_str()) != Some("Enabled") {
                    return "off".into();
                }
                match cfg.rule().and_then(|r| r.default_retention()) {
                    Some(d) => {
                        let mode = d.mode().map(|m| m.as_str().to_string()).unwrap_or_default();
                        let span = match (d.days(), d.years()) {
                            (Some(n), _) => format!("{n} days"),
                            (_, Some(n)) => format!("{n} years"),
                            _ => "no period".into(),
                        };
                        format!("on: {mode}, {span} by default")
                    }
                    None => "on: no default retention".into(),
                }
            }
            Err(e) => match e.code() {
                Some("ObjectLockConfigurationNotFoundError") => "off".into(),
                Some(code) => format!("unknown ({code})"),
                None => "unknown (no answer the client could read)".into(),
            },
        }
    }
}
