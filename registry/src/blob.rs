//! Content-addressed blobs on the local filesystem, written atomically and durably:
//! `sha256/<first 2 hex>/<64 hex>`, temp files in `tmp/` (emptied on open).

use crate::{RegistryError, Result};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// 64 lowercase hex digits (a blob's file name), or `None`.
    fn from_hex(s: &str) -> Option<Self> {
        let lower = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let bytes = hex::decode(s).ok().filter(|_| lower)?;
        Some(Digest(bytes.try_into().ok()?))
    }

    /// Parse `sha256:<64 hex>`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || RegistryError::Invalid(format!("`{s}` is not a sha256 digest"));
        let hex_part = s.strip_prefix("sha256:").ok_or_else(bad)?;
        let bytes = hex::decode(hex_part).map_err(|_| bad())?;
        Ok(Digest(bytes.try_into().map_err(|_| bad())?))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root.join("sha256"))?;
        // Temp files belong to writes that never finished (a crash before the rename);
        // nothing refers to them.
        let tmp = root.join("tmp");
        if tmp.is_dir() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        Ok(BlobStore {
            root: root.to_path_buf(),
        })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("sha256").join(&hex[..2]).join(hex)
    }

    pub fn has(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Store `bytes` under their digest: write a uniquely named temp file in `tmp/`,
    /// fsync it, rename it into place, fsync the shard directory (`sha256/ab/`) and
    /// `sha256/` (which makes a new shard directory's entry durable). When the call
    /// returns, the blob survives a crash. Concurrent puts of the same bytes each write
    /// their own temp file; the renames replace one whole file with an identical one.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        self.put_as(bytes, &digest)?;
        Ok(digest)
    }

    /// [`BlobStore::put`] for bytes whose digest the caller just computed.
    pub(crate) fn put_as(&self, bytes: &[u8], digest: &Digest) -> Result<()> {
        let dest = self.path(digest);
        if dest.is_file() {
            return Ok(());
        }
        let shard = dest
            .parent()
            .ok_or_else(|| RegistryError::Storage("blob path has no parent".into()))?;
        let shards = shard
            .parent()
            .ok_or_else(|| RegistryError::Storage("blob shard has no parent".into()))?;
        match fs::create_dir(shard) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        let mut tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))?;
        tmp.write_all(bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&dest).map_err(|e| e.error)?;
        File::open(shard)?.sync_all()?;
        // Every time, not only when this call created the shard: a concurrent put may
        // have created it and not have synced `sha256/` yet.
        File::open(shards)?.sync_all()?;
        Ok(())
    }

    pub fn get(&self, digest: &Digest) -> Result<Vec<u8>> {
        let bytes = fs::read(self.path(digest))
            .map_err(|e| RegistryError::NotFound(format!("blob {digest}: {e}")))?;
        if Digest::of(&bytes) != *digest {
            return Err(RegistryError::Storage(format!(
                "blob {digest} is corrupt on disk"
            )));
        }
        Ok(bytes)
    }

    /// Remove a blob; one that is not there is already deleted. Nothing checks that
    /// the index no longer references it: [`crate::Registry::gc`] is the caller that does.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        match fs::remove_file(self.path(digest)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every blob on disk (`sha256/<2 hex>/<64 hex>`), sorted; other names are skipped.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(self.root.join("sha256"))? {
            let shard = shard?;
            let shard_name = shard.file_name();
            let Some(prefix) = shard_name.to_str() else {
                continue;
            };
            if prefix.len() != 2 || !shard.file_type()?.is_dir() {
                continue;
            }
            for blob in fs::read_dir(shard.path())? {
                let blob = blob?;
                let name = blob.file_name();
                let Some(digest) = name.to_str().and_then(Digest::from_hex) else {
                    continue;
                };
                if digest.hex().starts_with(prefix) && blob.file_type()?.is_file() {
                    out.push(digest);
                }
            }
        }
        out.sort_by_key(|d| d.0);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_roundtrip_and_digest_format() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = store.put(b"hello").unwrap();
        assert_eq!(
            d.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(store.has(&d));
        assert_eq!(store.get(&d).unwrap(), b"hello");
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert!(Digest::parse("sha256:zz").is_err());
    }

    #[test]
    fn corrupt_blob_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = store.put(b"hello").unwrap();
        std::fs::write(store.path(&d), b"jello").unwrap();
        assert!(matches!(store.get(&d), Err(RegistryError::Storage(_))));
    }

    #[test]
    fn concurrent_puts_of_the_same_bytes_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        for round in 0..8u8 {
            // Large enough that the writes overlap; a fresh shard most rounds.
            let bytes: Vec<u8> = (0..1 << 20).map(|i| (i as u8) ^ round).collect();
            let barrier = std::sync::Barrier::new(16);
            let results: Vec<Result<Digest>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..16)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            store.put(&bytes)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let want = Digest::of(&bytes);
            for r in results {
                assert_eq!(r.unwrap(), want);
            }
            assert_eq!(store.get(&want).unwrap(), bytes);
        }
        // Every temp file was renamed into place or removed.
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert_eq!(store.list().unwrap().len(), 8);
    }

    #[test]
    fn list_skips_foreign_names_and_delete_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let a = store.put(b"a").unwrap();
        let b = store.put(b"b").unwrap();
        let shard = store.path(&a).parent().unwrap().to_path_buf();
        std::fs::write(shard.join("notes.txt"), b"x").unwrap();
        std::fs::write(shard.join(a.hex().to_uppercase()), b"x").unwrap();
        std::fs::create_dir(dir.path().join("sha256").join("zzz")).unwrap();
        let mut want = vec![a, b];
        want.sort_by_key(|d| d.0);
        assert_eq!(store.list().unwrap(), want);
        store.delete(&a).unwrap();
        store.delete(&a).unwrap();
        assert!(!store.has(&a));
        assert_eq!(store.list().unwrap(), vec![b]);
    }
}
