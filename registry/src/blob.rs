//! Content-addressed blobs on the local filesystem, written atomically.

use crate::{RegistryError, Result};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
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

    /// Write to a temp file, fsync, rename into place, fsync the directory.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        let dest = self.path(&digest);
        if dest.is_file() {
            return Ok(digest);
        }
        let dir = dest
            .parent()
            .ok_or_else(|| RegistryError::Storage("blob path has no parent".into()))?;
        fs::create_dir_all(dir)?;
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.{}", digest.hex(), std::process::id()));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &dest)?;
        File::open(dir)?.sync_all()?;
        Ok(digest)
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
}
