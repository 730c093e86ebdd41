//! Fault injection for tests and drills: a storage wrapper that, on a seeded
//! schedule, fails requests before or after doing them (a lost answer),
//! delays them, cuts downloads off, or goes down for good after N requests.
//! Every fault looks like what a real network does: a transient error.

use super::{Cap, ObjectInfo, Storage, StorageError};
use async_trait::async_trait;
use bytes::Bytes;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    pub seed: u64,
    /// Share of requests that fail (half before, half after doing the work).
    pub error_rate: f64,
    /// Share of requests delayed by up to `max_delay`.
    pub delay_rate: f64,
    pub max_delay: Duration,
    /// After this many requests, every request fails (storage down).
    pub down_after: Option<u64>,
}

/// Why a `COFFER_FAULTS` spec does not parse.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FaultSpecError {
    #[error("COFFER_FAULTS: {part:?} is not key=value")]
    NotKeyValue { part: String },
    #[error("COFFER_FAULTS: bad value in {part:?}")]
    BadValue { part: String },
    #[error("COFFER_FAULTS: unknown key {key:?}")]
    UnknownKey { key: String },
}

impl FaultPlan {
    /// Parses `seed=3,error_rate=0.1,delay_rate=0.2,max_delay_ms=50,down_after=100`
    /// (the `COFFER_FAULTS` variable: fault drills with the real binary).
    pub fn parse(spec: &str) -> Result<FaultPlan, FaultSpecError> {
        let mut plan = FaultPlan::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| FaultSpecError::NotKeyValue { part: part.into() })?;
            let bad = FaultSpecError::BadValue { part: part.into() };
            match k {
                "seed" => plan.seed = v.parse().map_err(|_| bad)?,
                "error_rate" => plan.error_rate = v.parse().map_err(|_| bad)?,
                "delay_rate" => plan.delay_rate = v.parse().map_err(|_| bad)?,
                "max_delay_ms" => {
                    plan.max_delay = Duration::from_millis(v.parse().map_err(|_| bad)?)
                }
                "down_after" => plan.down_after = Some(v.parse().map_err(|_| bad)?),
                _ => return Err(FaultSpecError::UnknownKey { key: k.into() }),
            }
        }
        Ok(plan)
    }
}

pub struct Faulty {
    inner: Box<dyn Storage>,
    plan: FaultPlan,
    rng: Mutex<StdRng>,
    requests: AtomicU64,
    /// Faults injected so far (tests assert that faults really happened).
    pub injected: Arc<AtomicU64>,
}

enum Fate {
    Ok,
    FailBefore,
    FailAfter,
}

impl Faulty {
    pub fn new(inner: Box<dyn Storage>, plan: FaultPlan) -> Faulty {
        Faulty {
            inner,
            rng: Mutex::new(StdRng::seed_from_u64(plan.seed)),
            plan,
            requests: AtomicU64::new(0),
            injected: Arc::new(AtomicU64::new(0)),
        }
    }

    fn fault(&self, what: &str) -> StorageError {
        self.injected.fetch_add(1, Ordering::Relaxed);
        StorageError::Io {
            location: self.inner.location(),
            key: what.to_string(),
            message: "connection reset by peer (injected)".into(),
            transient: true,
            kind: None,
        }
    }

    async fn fate(&self) -> Fate {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        if self.plan.down_after.is_some_and(|d| n >= d) {
            return Fate::FailBefore;
        }
        let (delay, fate) = {
            let Ok(mut rng) = self.rng.lock() else {
                return Fate::Ok;
            };
            let delay = (rng.r#gen::<f64>() < self.plan.delay_rate)
                .then(|| self.plan.max_delay.mul_f64(rng.r#gen::<f64>()));
            let r = rng.r#gen::<f64>();
            let fate = if r < self.plan.error_rate / 2.0 {
                Fate::FailBefore
            } else if r < self.plan.error_rate {
                Fate::FailAfter
            } else {
                Fate::Ok
            };
            (delay, fate)
        };
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        fate
    }

    async fn apply<T>(
        &self,
        what: &str,
        op: impl std::future::Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        match self.fate().await {
            Fate::FailBefore => Err(self.fault(what)),
            Fate::FailAfter => {
                // The work is done, the answer is lost (or a download is cut off).
                let _ = op.await;
                Err(self.fault(what))
            }
            Fate::Ok => op.await,
        }
    }
}

#[async_trait]
impl Storage for Faulty {
    fn location(&self) -> String {
        self.inner.location()
    }
    async fn object_lock(&self) -> Result<Option<String>, StorageError> {
        self.inner.object_lock().await
    }
    async fn range_checksum(
        &self,
        key: &str,
        offset: u64,
        length: u64,
    ) -> Result<Option<String>, StorageError> {
        self.apply(key, self.inner.range_checksum(key, offset, length))
            .await
    }
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.apply(key, self.inner.put(key, data)).await
    }
    async fn put_file(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        match self.fate().await {
            // An upload that fails must leave the spool file for the retry.
            Fate::FailBefore | Fate::FailAfter => Err(self.fault(key)),
            Fate::Ok => self.inner.put_file(key, path).await,
        }
    }
    async fn create(&self, key: &str, data: Bytes) -> Result<bool, StorageError> {
        self.apply(key, self.inner.create(key, data)).await
    }
    async fn get_capped(&self, key: &str, cap: Cap) -> Result<Bytes, StorageError> {
        self.apply(key, self.inner.get_capped(key, cap)).await
    }
    async fn get_range(&self, key: &str, offset: u64, length: u64) -> Result<Bytes, StorageError> {
        self.apply(key, self.inner.get_range(key, offset, length))
            .await
    }
    async fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.apply(key, self.inner.stat(key)).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.apply(prefix, self.inner.list(prefix)).await
    }
    async fn list_level(&self, prefix: &str) -> Result<super::Level, StorageError> {
        self.apply(prefix, self.inner.list_level(prefix)).await
    }
    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.apply(key, self.inner.delete(key)).await
    }
    async fn delete_many(&self, keys: &[String]) -> Result<(), StorageError> {
        self.apply("delete_many", self.inner.delete_many(keys))
            .await
    }
    async fn remove_stale_temp(&self) -> Result<u64, StorageError> {
        self.inner.remove_stale_temp().await
    }
    async fn exists(&self) -> Result<bool, StorageError> {
        self.apply("", self.inner.exists()).await
    }
    async fn create_location(&self) -> Result<(), StorageError> {
        self.inner.create_location().await
    }
    fn set_write_lock(&self, lock: Option<super::WriteLock>) -> Result<(), StorageError> {
        self.inner.set_write_lock(lock)
    }
    fn clock(&self) -> Option<jiff::Timestamp> {
        self.inner.clock()
    }
    async fn retention(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<super::Retention>, StorageError> {
        self.apply(key, self.inner.retention(key, version)).await
    }
    async fn extend_retention(&self, key: &str, r: super::Retention) -> Result<(), StorageError> {
        self.apply(key, self.inner.extend_retention(key, r)).await
    }
    async fn list_versions(&self, prefix: &str) -> Result<Vec<super::VersionInfo>, StorageError> {
        self.apply(prefix, self.inner.list_versions(prefix)).await
    }
    async fn get_version_capped(
        &self,
        key: &str,
        version: &str,
        cap: Cap,
    ) -> Result<Bytes, StorageError> {
        self.apply(key, self.inner.get_version_capped(key, version, cap))
            .await
    }
    async fn get_version_range(
        &self,
        key: &str,
        version: &str,
        offset: u64,
        length: u64,
    ) -> Result<Bytes, StorageError> {
        self.apply(
            key,
            self.inner.get_version_range(key, version, offset, length),
        )
        .await
    }
    async fn delete_version(&self, key: &str, version: &str) -> Result<(), StorageError> {
        self.apply(key, self.inner.delete_version(key, version))
            .await
    }
    async fn restore_version(&self, key: &str, version: &str) -> Result<(), StorageError> {
        self.apply(key, self.inner.restore_version(key, version))
            .await
    }
    async fn apply_lifecycle(&self) -> Result<(), StorageError> {
        self.inner.apply_lifecycle().await
    }
}

#[cfg(test)]
mod tests {
    use super::{FaultPlan, FaultSpecError};
    use std::time::Duration;

    #[test]
    fn a_fault_spec_parses_and_a_bad_one_says_which_part() {
        let plan = FaultPlan::parse("seed=3, error_rate=0.5,max_delay_ms=20,down_after=9").unwrap();
        assert_eq!(plan.seed, 3);
        assert_eq!(plan.error_rate, 0.5);
        assert_eq!(plan.max_delay, Duration::from_millis(20));
        assert_eq!(plan.down_after, Some(9));
        let e = FaultPlan::parse("seed").unwrap_err();
        assert_eq!(
            e,
            FaultSpecError::NotKeyValue {
                part: "seed".into()
            }
        );
        assert_eq!(e.to_string(), r#"COFFER_FAULTS: "seed" is not key=value"#);
        let e = FaultPlan::parse("seed=x").unwrap_err();
        assert_eq!(e.to_string(), r#"COFFER_FAULTS: bad value in "seed=x""#);
        let e = FaultPlan::parse("speed=1").unwrap_err();
        assert_eq!(
            e,
            FaultSpecError::UnknownKey {
                key: "speed".into()
            }
        );
        assert_eq!(e.to_string(), r#"COFFER_FAULTS: unknown key "speed""#);
    }
}
