//! Object Lock and object versions on S3: the lock every write carries,
//! reading and lengthening a lock, and the versions recovery reads
//! (docs/IMMUTABILITY.md).

use super::*;
use crate::storage::{LockMode, Retention, VersionInfo, WriteLock};
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::types::{ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode};

fn s3_mode(m: LockMode) -> ObjectLockMode {
    match m {
        LockMode::Governance => ObjectLockMode::Governance,
        LockMode::Compliance => ObjectLockMode::Compliance,
    }
}

fn timestamp(t: &DateTime) -> Option<jiff::Timestamp> {
    jiff::Timestamp::new(t.secs(), t.subsec_nanos() as i32).ok()
}

impl S3Storage {
    pub(super) fn set_lock(&self, lock: Option<WriteLock>) {
        // A poisoned mutex only means a panic elsewhere; the value is whole.
        *self.write_lock.lock().unwrap_or_else(|p| p.into_inner()) = lock;
    }

    /// The lock an object written now gets, as the request's two fields.
    pub(super) fn lock_now(&self) -> (Option<ObjectLockMode>, Option<DateTime>) {
        let lock = *self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        match lock {
            None => (None, None),
            Some(l) => {
                let r = l.retention_from(jiff::Timestamp::now());
                (
                    Some(s3_mode(r.mode)),
                    Some(DateTime::from_secs(r.until.as_second())),
                )
            }
        }
    }

    /// Whether new objects are locked (a multipart upload then sets the
    /// lock again once complete: some servers ignore it on the create).
    pub(super) fn locking(&self) -> Option<WriteLock> {
        *self.write_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) async fn head_retention(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<Retention>, StorageError> {
        // HeadObject carries the lock; GetObjectRetention is not
        // implemented alike everywhere (moto answers 500).
        let h = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_version_id(version.map(str::to_string))
            .send()
            .await
            .map_err(|e| self.error("HeadObject", key, e))?;
        let mode = match h.object_lock_mode() {
            Some(ObjectLockMode::Governance) => LockMode::Governance,
            Some(ObjectLockMode::Compliance) => LockMode::Compliance,
            _ => return Ok(None),
        };
        Ok(h.object_lock_retain_until_date()
            .and_then(timestamp)
            .map(|until| Retention { mode, until }))
    }

    pub(super) async fn put_retention(&self, key: &str, r: Retention) -> Result<(), StorageError> {
        let mode = match r.mode {
            LockMode::Governance => ObjectLockRetentionMode::Governance,
            LockMode::Compliance => ObjectLockRetentionMode::Compliance,
        };
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .retention(
                ObjectLockRetention::builder()
                    .mode(mode)
                    .retain_until_date(DateTime::from_secs(r.until.as_second()))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("PutObjectRetention", key, e))
    }

    pub(super) async fn versions(&self, prefix: &str) -> Result<Vec<VersionInfo>, StorageError> {
        let mut out = Vec::new();
        let (mut key_marker, mut version_marker) = (None::<String>, None::<String>);
        loop {
            let page = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(self.full_key(prefix))
                .set_key_marker(key_marker.take())
                .set_version_id_marker(version_marker.take())
                .send()
                .await
                .map_err(|e| self.error("ListObjectVersions", prefix, e))?;
            let mut push = |key: Option<&str>,
                            version: Option<&str>,
                            modified: Option<&DateTime>,
                            size: u64,
                            marker: bool,
                            latest: bool,
                            etag: Option<&str>| {
                let (Some(k), Some(v), Some(m)) = (
                    key.and_then(|k| k.strip_prefix(&self.prefix)),
                    version,
                    modified.and_then(timestamp),
                ) else {
                    return;
                };
                out.push(VersionInfo {
                    key: k.to_string(),
                    version: v.to_string(),
                    modified: m,
                    size,
                    delete_marker: marker,
                    latest,
                    etag: etag.map(str::to_string),
                });
            };
            for v in page.versions() {
                push(
                    v.key(),
                    v.version_id(),
                    v.last_modified(),
                    v.size().unwrap_or(0).max(0) as u64,
                    false,
                    v.is_latest().unwrap_or(false),
                    v.e_tag(),
                );
            }
            for d in page.delete_markers() {
                push(
                    d.key(),
                    d.version_id(),
                    d.last_modified(),
                    0,
                    true,
                    d.is_latest().unwrap_or(false),
                    None,
                );
            }
            if !page.is_truncated().unwrap_or(false) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            version_marker = page.next_version_id_marker().map(str::to_string);
            if key_marker.is_none() && version_marker.is_none() {
                break;
            }
        }
        Ok(out)
    }

    pub(super) async fn remove_version(
        &self,
        key: &str,
        version: &str,
    ) -> Result<(), StorageError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .version_id(version)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("DeleteObjectVersion", key, e))
    }

    /// Copies `version` over the current one inside storage: the version
    /// becomes current again, with a fresh lock when new objects get one.
    pub(super) async fn copy_version(&self, key: &str, version: &str) -> Result<(), StorageError> {
        let full = self.full_key(key);
        let source = format!(
            "{}/{}?versionId={}",
            self.bucket,
            urlencoding_path(&full),
            urlencoding_path(version)
        );
        // The lock is set by a second request: a copy that carries one is
        // refused by servers that want a checksum of it (moto; a copy has
        // no body to take one of).
        let lock = *self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(&full)
            .copy_source(source)
            .send()
            .await
            .map_err(|e| self.error("CopyObject", key, e))?;
        match lock {
            Some(l) => {
                self.put_retention(key, l.retention_from(jiff::Timestamp::now()))
                    .await
            }
            None => Ok(()),
        }
    }
}

impl S3Storage {
    /// Adds this repository's lifecycle rule to the bucket's, replacing an
    /// earlier one of the same id and keeping every other rule.
    pub(super) async fn put_lifecycle(&self) -> Result<(), StorageError> {
        use aws_sdk_s3::types::{
            AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
            LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, NoncurrentVersionExpiration,
        };
        use policy::{ABORT_UPLOAD_DAYS, NONCURRENT_DAYS, lifecycle_id};
        let id = lifecycle_id(&self.prefix);
        let mut rules: Vec<LifecycleRule> = match self
            .client
            .get_bucket_lifecycle_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(out) => out.rules().to_vec(),
            Err(e) if e.code() == Some("NoSuchLifecycleConfiguration") => Vec::new(),
            Err(e) => return Err(self.error("GetBucketLifecycleConfiguration", "", e)),
        };
        rules.retain(|r| r.id() != Some(id.as_str()));
        let build = |e: aws_sdk_s3::error::BuildError| StorageError::Unavailable {
            location: self.location(),
            message: e.to_string(),
        };
        rules.push(
            LifecycleRule::builder()
                .id(&id)
                .status(ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix(&self.prefix).build())
                .noncurrent_version_expiration(
                    NoncurrentVersionExpiration::builder()
                        .noncurrent_days(NONCURRENT_DAYS)
                        .build(),
                )
                .expiration(
                    LifecycleExpiration::builder()
                        .expired_object_delete_marker(true)
                        .build(),
                )
                .abort_incomplete_multipart_upload(
                    AbortIncompleteMultipartUpload::builder()
                        .days_after_initiation(ABORT_UPLOAD_DAYS)
                        .build(),
                )
                .build()
                .map_err(build)?,
        );
        self.client
            .put_bucket_lifecycle_configuration()
            .bucket(&self.bucket)
            .lifecycle_configuration(
                BucketLifecycleConfiguration::builder()
                    .set_rules(Some(rules))
                    .build()
                    .map_err(build)?,
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.error("PutBucketLifecycleConfiguration", "", e))
    }
}

/// A copy source is `bucket/key?versionId=…`, percent-encoded; `/`
/// stays as it is between the key's parts.
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn urlencoding_path(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, COPY_SOURCE).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn copy_sources_are_encoded() {
        assert_eq!(super::urlencoding_path("p/data/ab/x.y"), "p/data/ab/x.y");
        assert_eq!(super::urlencoding_path("a b+c"), "a%20b%2Bc");
    }
}
