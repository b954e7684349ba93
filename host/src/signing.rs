//! Artifact signatures: ed25519 over a component's digest.
//!
//! What is signed is the digest as text, `sha256:<64 hex>` (the bytes of that ASCII
//! string), the way cosign signs an OCI manifest digest: a signature vouches for
//! exact bytes, whatever name or version they are deployed under. Private keys are
//! PKCS#8 PEM files (`quiver keys generate`, or `openssl genpkey -algorithm ed25519`);
//! public keys are written `ed25519:<64 hex>`. A tenant that trusts one or more keys
//! (`quiver tenants grant acme signer ed25519:…`) only runs components that carry a
//! signature by one of them: checked at deploy and again each time a host pulls the
//! component from the registry to load it.

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use std::fmt;

pub const KEY_PREFIX: &str = "ed25519:";
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";
/// The most a key file may hold: a PKCS#8 ed25519 key is under 200 bytes of PEM.
pub const MAX_KEY_FILE: u64 = 4 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parse `ed25519:<64 hex>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not an ed25519 public key (expected `ed25519:<64 hex>`)");
        let hex_part = s.trim().strip_prefix(KEY_PREFIX).ok_or_else(bad)?;
        let bytes = hex::decode(hex_part).map_err(|_| bad())?;
        Ok(PublicKey(bytes.try_into().map_err(|_| bad())?))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_PREFIX}{}", hex::encode(self.0))
    }
}

/// A signature over a digest, as a deploy carries it and the registry keeps it:
/// `{"key": "ed25519:…", "signature": "<128 hex>"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub key: String,
    pub signature: String,
}

impl Signature {
    /// `Ok` when this is a well-formed signature by `key` over `digest`; otherwise
    /// why not, in words.
    pub fn verify(&self, digest: &str) -> Result<PublicKey, String> {
        let key = PublicKey::parse(&self.key)?;
        let sig = hex::decode(&self.signature)
            .ok()
            .filter(|s| s.len() == 64)
            .ok_or_else(|| "the signature is not 128 hex digits (64 bytes)".to_string())?;
        UnparsedPublicKey::new(&ED25519, key.0)
            .verify(digest.as_bytes(), &sig)
            .map_err(|_| format!("the signature by {key} does not verify over {digest}"))?;
        Ok(key)
    }
}

/// Whether `signatures` hold one by a key in `trusted` that verifies over `digest`;
/// the error says what is missing (no signature, only untrusted keys, or a trusted
/// key whose signature does not verify).
pub fn check_trusted(
    tenant: &str,
    trusted: &[String],
    digest: &str,
    signatures: &[Signature],
) -> Result<PublicKey, String> {
    if signatures.is_empty() {
        return Err(format!(
            "tenant `{tenant}` runs only components signed by a key it trusts ({} trusted); {digest} is not signed",
            trusted.len()
        ));
    }
    let mut reasons = Vec::new();
    for s in signatures {
        let Ok(key) = PublicKey::parse(&s.key) else {
            reasons.push(format!("`{}` is not an ed25519 key", s.key));
            continue;
        };
        if !trusted
            .iter()
            .any(|t| PublicKey::parse(t).ok() == Some(key))
        {
            reasons.push(format!("{key} is not trusted by tenant `{tenant}`"));
            continue;
        }
        match s.verify(digest) {
            Ok(key) => return Ok(key),
            Err(why) => reasons.push(why),
        }
    }
    Err(format!(
        "{digest} has no valid signature by a key tenant `{tenant}` trusts: {}",
        reasons.join("; ")
    ))
}

/// A private key, loaded from a PKCS#8 PEM file.
pub struct SigningKey(Ed25519KeyPair);

impl SigningKey {
    /// A new random key and its PEM text.
    pub fn generate() -> Result<(Self, String), String> {
        let rng = ring::rand::SystemRandom::new();
        let der = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| "no randomness for a new key".to_string())?;
        let key = Ed25519KeyPair::from_pkcs8(der.as_ref())
            .map_err(|e| format!("a generated key does not load: {e}"))?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = format!("{PEM_BEGIN}\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');
        Ok((SigningKey(key), pem))
    }

    /// Parse a PKCS#8 PEM private key (v1, as OpenSSL writes it, or v2).
    pub fn from_pem(text: &str) -> Result<Self, String> {
        let body = text
            .split_once(PEM_BEGIN)
            .and_then(|(_, rest)| rest.split_once(PEM_END))
            .map(|(b, _)| b)
            .ok_or_else(|| format!("not a PEM private key (no `{PEM_BEGIN}` block)"))?;
        let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("the PEM block is not base64: {e}"))?;
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map(SigningKey)
            .map_err(|e| format!("not a PKCS#8 ed25519 private key: {e}"))
    }

    pub fn public(&self) -> PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.0.public_key().as_ref());
        PublicKey(key)
    }

    /// Sign `digest` (`sha256:<hex>`).
    pub fn sign(&self, digest: &str) -> Signature {
        Signature {
            key: self.public().to_string(),
            signature: hex::encode(self.0.sign(digest.as_bytes()).as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    #[test]
    fn a_signature_verifies_only_over_its_digest_and_key() {
        let (key, pem) = SigningKey::generate().unwrap();
        let again = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(key.public(), again.public());
        let sig = again.sign(DIGEST);
        assert_eq!(sig.verify(DIGEST), Ok(key.public()));
        let other = DIGEST.replace("sha256:0", "sha256:1");
        assert!(sig.verify(&other).unwrap_err().contains("does not verify"));
        let (stranger, _) = SigningKey::generate().unwrap();
        let forged = Signature {
            key: stranger.public().to_string(),
            ..sig.clone()
        };
        assert!(forged.verify(DIGEST).is_err());
        let trusted = vec![key.public().to_string()];
        assert!(check_trusted("t", &trusted, DIGEST, std::slice::from_ref(&sig)).is_ok());
        let err = check_trusted("t", &trusted, DIGEST, &[]).unwrap_err();
        assert!(err.contains("is not signed"), "{err}");
        let err = check_trusted("t", &trusted, DIGEST, &[stranger.sign(DIGEST)]).unwrap_err();
        assert!(err.contains("is not trusted"), "{err}");
        let err = check_trusted("t", &trusted, &other, &[sig]).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
    }

    #[test]
    fn malformed_keys_and_signatures_are_refused_in_words() {
        for bad in [
            "",
            "ed25519:",
            "ed25519:zz",
            "rsa:00",
            &format!("ed25519:{}", "0".repeat(62)),
        ] {
            assert!(PublicKey::parse(bad).is_err(), "{bad}");
        }
        let (key, _) = SigningKey::generate().unwrap();
        let short = Signature {
            key: key.public().to_string(),
            signature: "abcd".into(),
        };
        assert!(short.verify(DIGEST).unwrap_err().contains("128 hex"));
        assert!(SigningKey::from_pem("hello").is_err());
        assert!(SigningKey::from_pem(&format!("{PEM_BEGIN}\n!!!\n{PEM_END}")).is_err());
        assert!(SigningKey::from_pem(&format!("{PEM_BEGIN}\nAAAA\n{PEM_END}")).is_err());
    }
}
