//! Signatures attached to digests, the way cosign attaches them to an OCI artifact:
//! a signature vouches for bytes, not for a name, so it is kept by digest, and one
//! digest may carry signatures by several keys. The registry stores them as given
//! (key and signature as text); the host verifies them on the way in and each time it
//! pulls a component to load.

use crate::{Digest, Registry, Result};
use rusqlite::params;
use std::time::SystemTime;

/// Signatures one digest may carry.
pub const MAX_SIGNATURES: usize = 16;

impl Registry {
    /// Keep a signature `(key, signature)` of `digest`; a key that signed before has
    /// its signature replaced. Refused once the digest carries [`MAX_SIGNATURES`] by
    /// other keys.
    pub fn add_signature(&self, digest: &Digest, key: &str, signature: &str) -> Result<()> {
        let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let conn = self.index().writer()?;
        let others: i64 = conn.query_row(
            "SELECT COUNT(*) FROM signatures WHERE digest = ?1 AND key != ?2",
            params![digest.to_string(), key],
            |r| r.get(0),
        )?;
        if others as usize >= MAX_SIGNATURES {
            return Err(crate::RegistryError::Invalid(format!(
                "{digest} already carries {MAX_SIGNATURES} signatures"
            )));
        }
        conn.execute(
            "INSERT INTO signatures (digest, key, signature, added_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (digest, key) DO UPDATE SET signature = ?3, added_at = ?4",
            params![digest.to_string(), key, signature, at],
        )?;
        Ok(())
    }

    /// The `(key, signature)` pairs `digest` carries, oldest first.
    pub fn signatures(&self, digest: &Digest) -> Result<Vec<(String, String)>> {
        let conn = self.index().reader()?;
        let mut stmt = conn.prepare(
            "SELECT key, signature FROM signatures WHERE digest = ?1 ORDER BY added_at, key",
        )?;
        let rows = stmt
            .query_map(params![digest.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use crate::Registry;

    #[test]
    fn signatures_are_kept_by_digest_and_replaced_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registry::open(dir.path()).unwrap();
        let d = r.blobs().put(b"bytes").unwrap();
        assert!(r.signatures(&d).unwrap().is_empty());
        r.add_signature(&d, "ed25519:aa", "01").unwrap();
        r.add_signature(&d, "ed25519:bb", "02").unwrap();
        r.add_signature(&d, "ed25519:aa", "03").unwrap();
        let mut got = r.signatures(&d).unwrap();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("ed25519:aa".to_string(), "03".to_string()),
                ("ed25519:bb".to_string(), "02".to_string())
            ]
        );
        let other = r.blobs().put(b"other").unwrap();
        assert!(r.signatures(&other).unwrap().is_empty());
        for i in 0..super::MAX_SIGNATURES - 2 {
            r.add_signature(&d, &format!("ed25519:{i:02}"), "00")
                .unwrap();
        }
        assert!(r.add_signature(&d, "ed25519:one-too-many", "00").is_err());
        r.add_signature(&d, "ed25519:aa", "04").unwrap();
    }
}
