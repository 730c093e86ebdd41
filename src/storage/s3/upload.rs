//! The one upload path: single PUTs from memory or a spool file, and
//! multipart uploads, with the checksum mode the settings resolve to.

use super::*;

/// What an upload sends: bytes in memory, or a spool file, whole or the
/// `(offset, length)` of one multipart part.
pub(super) enum Payload<'a> {
    Memory(Bytes),
    File(&'a Path, Option<(u64, u64)>),
}

impl S3Storage {
    /// The body of an upload. A spool file is streamed, in reads of 1 MiB,
    /// not the SDK's 64 KiB: every read is a hand-off to tokio's blocking
    /// pool.
    pub(super) async fn body(
        &self,
        key: &str,
        payload: &Payload<'_>,
    ) -> Result<ByteStream, StorageError> {
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
    pub(super) fn multipart_algorithm(&self) -> Option<aws_sdk_s3::types::ChecksumAlgorithm> {
        self.sends_checksums()
            .then_some(aws_sdk_s3::types::ChecksumAlgorithm::Crc32)
    }

    /// Whether uploads carry a CRC32: as the settings say, and always
    /// under Object Lock, where S3 refuses an upload without a checksum
    /// (`MissingUploadObjectWithObjectLockHeaders`).
    pub(super) fn sends_checksums(&self) -> bool {
        self.checksums.send || self.locking().is_some()
    }

    /// The one upload path of a single object: packs streamed from spool
    /// files and objects put from memory alike (index, snapshots, keyring,
    /// damage records, audit, lock, copies), with the storage class,
    /// encryption and checksum mode of the profile. With `create_only`, the
    /// object is stored only if the key is free (`If-None-Match: *`), and
    /// Ok(false) says it was not. Payload signing is off: it would SHA-256
    /// every byte before sending, which TLS and self-verifying packs make
    /// redundant.
    pub(super) async fn upload(
        &self,
        key: &str,
        payload: Payload<'_>,
        create_only: bool,
    ) -> Result<bool, StorageError> {
        let (class, sse, kms) = self.object_settings();
        let (lock_mode, lock_until) = self.lock_now();
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .set_storage_class(class)
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms)
            .set_object_lock_mode(lock_mode)
            .set_object_lock_retain_until_date(lock_until)
            .body(self.body(key, &payload).await?);
        if create_only {
            req = req.if_none_match("*");
        }
        if self.locking().is_some() {
            req = req.checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32);
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
    pub(super) async fn put_multipart(
        &self,
        key: &str,
        path: &Path,
        size: u64,
    ) -> Result<(), StorageError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        let full = self.full_key(key);
        let (class, sse, kms) = self.object_settings();
        let (lock_mode, lock_until) = self.lock_now();
        let create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .set_storage_class(class)
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms)
            .set_object_lock_mode(lock_mode)
            .set_object_lock_retain_until_date(lock_until)
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
                                .filter(|_| self.sends_checksums())
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
                .map_err(|e| self.error("CompleteMultipartUpload", key, e))?;
            // Some servers store a multipart object without the lock asked
            // for on its create (moto 5.2.5): set it again, one request.
            match self.locking() {
                Some(l) => {
                    self.put_retention(key, l.retention_from(jiff::Timestamp::now()))
                        .await
                }
                None => Ok(()),
            }
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
    pub(super) fn object_settings(
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
    pub(super) fn file_error(
        &self,
        key: &str,
        path: &Path,
        e: impl std::fmt::Display,
    ) -> StorageError {
        StorageError::Io {
            location: self.location(),
            key: key.to_string(),
            message: format!("{}: {e}", path.display()),
            transient: false,
            kind: None,
        }
    }
}
