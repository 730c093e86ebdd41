//! The lock ledger: how long each object's Object Lock is known to run,
//! so lengthening locks asks storage only about what is due
//! (engine/locks.rs). A cache like the rest: a lost row costs one read of
//! the object's lock.

use super::*;
use jiff::Timestamp;

impl Catalog {
    fn ensure_locks(&self) -> Result<(), CatalogError> {
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS locks (key TEXT PRIMARY KEY, until INTEGER NOT NULL);",
            )
            .map_err(|e| self.err(e))
    }

    /// Every object's known lock end, by key.
    pub fn lock_untils(&self) -> Result<HashMap<String, Timestamp>, CatalogError> {
        self.ensure_locks()?;
        let mut out = HashMap::new();
        self.each_row("SELECT key, until FROM locks", [], |r| {
            if let Ok(t) = Timestamp::from_second(r.get::<_, i64>(1)?) {
                out.insert(r.get::<_, String>(0)?, t);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Records lock ends storage reported (`check` found them shorter
    /// than the ledger had them), so the next pass lengthens them.
    pub fn correct_locks(&mut self, untils: &[(String, Timestamp)]) -> Result<(), CatalogError> {
        self.ensure_locks()?;
        for (k, t) in untils {
            self.conn
                .execute(
                    "INSERT OR REPLACE INTO locks (key, until) VALUES (?1, ?2)",
                    params![k, t.as_second()],
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Records lock ends, and forgets the objects in `gone` (deleted, or
    /// no longer needed by history), in one transaction.
    pub fn record_locks(
        &mut self,
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
                .prepare("INSERT OR REPLACE INTO locks (key, until) VALUES (?1, ?2)")
                .map_err(err)?;
            for (k, t) in untils {
                put.execute(params![k, t.as_second()]).map_err(err)?;
            }
            let mut del = tx
                .prepare("DELETE FROM locks WHERE key = ?1")
                .map_err(err)?;
            for k in gone {
                del.execute([k]).map_err(err)?;
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
        assert!(c.lock_untils().unwrap().is_empty());
        let t = |s| Timestamp::from_second(s).unwrap();
        c.record_locks(&[("a".into(), t(10)), ("b".into(), t(20))], &[])
            .unwrap();
        c.record_locks(&[("a".into(), t(30))], &["b".to_string()])
            .unwrap();
        let got = c.lock_untils().unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got["a"], t(30));
    }
}
