//! The lock ledger: how long each object's Object Lock is known to run,
//! so lengthening locks asks storage only about what is due
//! (engine/locks.rs). A cache like the rest: a lost row costs one read of
//! the object's lock. Rows are per place: [`OWN_LOCKS`] for the repository's
//! own storage, a copy's location for the copies `coffer copy` keeps.

use super::*;
use jiff::Timestamp;

/// The place of the repository's own objects in the ledger.
pub const OWN_LOCKS: &str = "";

impl Catalog {
    fn ensure_locks(&self) -> Result<(), CatalogError> {
        // The first ledger had no places; being a cache, it is dropped.
        self.conn
            .execute_batch(
                "DROP TABLE IF EXISTS locks;
                 CREATE TABLE IF NOT EXISTS lock_ends (place TEXT NOT NULL, key TEXT NOT NULL,
                     until INTEGER NOT NULL, PRIMARY KEY (place, key));",
            )
            .map_err(|e| self.err(e))
    }

    /// Every object's known lock end at `place`, by key.
    pub fn lock_untils(&self, place: &str) -> Result<HashMap<String, Timestamp>, CatalogError> {
        self.ensure_locks()?;
        let mut out = HashMap::new();
        let sql = "SELECT key, until FROM lock_ends WHERE place = ?1";
        self.each_row(sql, [place], |r| {
            if let Ok(t) = Timestamp::from_second(r.get::<_, i64>(1)?) {
                out.insert(r.get::<_, String>(0)?, t);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Records lock ends storage reported (`check` found them shorter
    /// than the ledger had them), so the next pass lengthens them.
    pub fn correct_locks(
        &mut self,
        place: &str,
        untils: &[(String, Timestamp)],
    ) -> Result<(), CatalogError> {
        self.ensure_locks()?;
        for (k, t) in untils {
            self.conn
                .execute(
                    "INSERT OR REPLACE INTO lock_ends (place, key, until) VALUES (?1, ?2, ?3)",
                    params![place, k, t.as_second()],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Records lock ends at `place`, and forgets the objects in `gone`
    /// (deleted, or no longer needed by history), in one transaction.
    pub fn record_locks(
        &mut self,
        place: &str,
        untils: &[(String, Timestamp)],
        gone: &[String],
    ) -> Result<(), CatalogError> {
        self.ensure_locks()?;
        let path = self.path.clone();
        let err = |e| CatalogError::sqlite(path.clone(), e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        {
            let mut put = tx
                .prepare("INSERT OR REPLACE INTO lock_ends (place, key, until) VALUES (?1, ?2, ?3)")
                .map_err(err)?;
            for (k, t) in untils {
                put.execute(params![place, k, t.as_second()]).map_err(err)?;
            }
            let mut del = tx
                .prepare("DELETE FROM lock_ends WHERE place = ?1 AND key = ?2")
                .map_err(err)?;
            for k in gone {
                del.execute([place, k]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ends_are_kept_and_forgotten_with_their_objects() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&dir.path().join("c.sqlite"), "r").unwrap();
        assert!(c.lock_untils(OWN_LOCKS).unwrap().is_empty());
        let t = |s| Timestamp::from_second(s).unwrap();
        c.record_locks(OWN_LOCKS, &[("a".into(), t(10)), ("b".into(), t(20))], &[])
            .unwrap();
        c.record_locks(OWN_LOCKS, &[("a".into(), t(30))], &["b".to_string()])
            .unwrap();
        // A copy's ledger is its own: same keys, other ends.
        c.record_locks("s3://copy/r", &[("a".into(), t(99))], &[])
            .unwrap();
        let got = c.lock_untils(OWN_LOCKS).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got["a"], t(30));
        assert_eq!(c.lock_untils("s3://copy/r").unwrap()["a"], t(99));
    }
}
