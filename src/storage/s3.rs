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

use super::{Cap, ObjectInfo, SetupError, Storage, StorageError};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, Region, RuntimeComponents};
use aws_sdk_s3::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use std::path::{Path, PathBuf};

mod client;
mod errors;
mod options;
pub mod policy;
mod probe;
mod upload;
mod versions;

pub use client::{check_settings, parse_url};
pub use options::{ChecksumSetting, S3Options};
use options::{Checksums, REQUEST_ENV, RESPONSE_ENV, resolve_checksums};
use upload::Payload;

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
    /// The Object Lock every new object gets (`set_write_lock`).
    write_lock: std::sync::Mutex<Option<super::WriteLock>>,
    /// The server's time at its last answer.
    clock: client::ServerClock,
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
}

impl S3Storage {
    /// A whole-object read of the current version or of `version`.
    async fn read_capped(
        &self,
        key: &str,
        version: Option<&str>,
        cap: Cap,
    ) -> Result<Bytes, StorageError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_version_id(version.map(str::to_string))
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

    /// A ranged read of the current version or of `version`.
    async fn read_range(
        &self,
        key: &str,
        version: Option<&str>,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, StorageError> {
        if length == 0 {
            return Ok(Bytes::new());
        }
        let truncated =
            |got: String| StorageError::truncated(self.location(), key, offset, length, &got);
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
            .set_version_id(version.map(str::to_string))
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

    fn clock(&self) -> Option<jiff::Timestamp> {
        self.clock.last()
    }

    async fn create(&self, key: &str, data: Bytes) -> Result<bool, StorageError> {
        self.upload(key, Payload::Memory(data), true).await
    }

    async fn get_capped(&self, key: &str, cap: Cap) -> Result<Bytes, StorageError> {
        self.read_capped(key, None, cap).await
    }

    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Bytes, StorageError> {
        self.read_range(key, None, offset, length).await
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
                        .and_then(|t| jiff::Timestamp::from_second(t.secs()).ok()),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn list_level(&self, prefix: &str) -> Result<super::Level, StorageError> {
        let mut level = super::Level::default();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .delimiter("/")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("ListObjectsV2", prefix, e))?;
            for o in page.contents() {
                let Some(k) = o.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                level.objects.push(ObjectInfo {
                    key: k.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    modified: o
                        .last_modified()
                        .and_then(|t| jiff::Timestamp::from_second(t.secs()).ok()),
                });
            }
            level.folders.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|c| c.prefix()?.strip_prefix(&self.prefix))
                    .map(str::to_string),
            );
        }
        level.objects.sort_by(|a, b| a.key.cmp(&b.key));
        level.folders.sort();
        Ok(level)
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
        let mut req = self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            // Object Lock can only be turned on when a bucket is created
            // (it turns versioning on with it).
            .set_object_lock_enabled_for_bucket(self.opts.object_lock.map(|_| true));
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

    fn set_write_lock(&self, lock: Option<super::WriteLock>) -> Result<(), StorageError> {
        self.set_lock(lock);
        Ok(())
    }
    async fn retention(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<super::Retention>, StorageError> {
        self.head_retention(key, version).await
    }
    async fn extend_retention(&self, key: &str, r: super::Retention) -> Result<(), StorageError> {
        self.put_retention(key, r).await
    }
    async fn list_versions(&self, prefix: &str) -> Result<Vec<super::VersionInfo>, StorageError> {
        self.versions(prefix).await
    }
    async fn get_version_capped(
        &self,
        key: &str,
        version: &str,
        cap: Cap,
    ) -> Result<Bytes, StorageError> {
        self.read_capped(key, Some(version), cap).await
    }
    async fn get_version_range(
        &self,
        key: &str,
        version: &str,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, StorageError> {
        self.read_range(key, Some(version), offset, length).await
    }
    async fn delete_version(&self, key: &str, version: &str) -> Result<(), StorageError> {
        self.remove_version(key, version).await
    }
    async fn restore_version(&self, key: &str, version: &str) -> Result<(), StorageError> {
        self.copy_version(key, version).await
    }
    async fn apply_lifecycle(&self) -> Result<(), StorageError> {
        self.put_lifecycle().await
    }
}

#[cfg(test)]
mod tests {
    use super::client::{is_loopback, parse_url};
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
        for (url, bucket) in [("s3://My_Bucket/x", "My_Bucket"), ("s3://ab", "ab")] {
            assert!(
                matches!(parse_url(url), Err(SetupError::BadBucket { bucket: b }) if b == bucket),
                "{url}"
            );
        }
        assert!(matches!(parse_url("file:///x"), Err(SetupError::NotS3)));
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
            matches!(&e, SetupError::ChecksumEnv { name: REQUEST_ENV, value } if value == "sometimes")
        );
        let e = e.to_string();
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
