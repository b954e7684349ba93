//! `--registry oci://HOST[:PORT]/PATH`: artifacts in an OCI registry.
//!
//! Components are pushed as CNCF Wasm OCI artifacts (`oci-wasm`: one
//! `application/wasm` layer, an `application/vnd.wasm.config.v0+json` config that
//! names the component's world), to `PATH/<tenant>/fn/<name>:<version>`; models as
//! OCI artifacts too (one layer, `application/vnd.quiver.model.v1` artifact type),
//! to `PATH/<tenant>/model/<name>:<version>`. A tag is the version, with semver's
//! `+` (not allowed in a tag) written `_`. The push happens before the version
//! enters the index, so a version the index names is in the OCI registry.
//!
//! The host's blob store stays, as a cache by digest: a host that lacks a version's
//! bytes pulls the layer by its digest, bounded by the size the index recorded,
//! and keeps them only when their SHA-256 is that digest.
//!
//! **Precompiled code** (`--precompiled-key-file`): beside a component, the host
//! that deployed it pushes the native code its engine compiled, to
//! `PATH/<tenant>/aot/<name>:<version>-<engine>` (`<engine>`: a hash of wasmtime's
//! compatibility hash, so only a host that can load it looks for it). Loading
//! precompiled code runs it outside the sandbox's checks, so it is only taken with an
//! HMAC-SHA256 under a key the hosts share (a Kubernetes Secret, say) over the tenant,
//! the component's digest, the engine and the code's own digest: write access to the
//! registry alone cannot put native code on a host. Anything else (no such tag, a
//! bad MAC, another engine) falls back to pulling the component and compiling it.
//!
//! `oci://` speaks HTTPS, except to a loopback registry (`127.0.0.1`, `[::1]`,
//! `localhost`), which it speaks plain HTTP to, as Docker does. Credentials come
//! from `QUIVER_REGISTRY_USERNAME` / `QUIVER_REGISTRY_PASSWORD` (anonymous without).

use futures::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use std::collections::BTreeMap;

pub const MODEL_ARTIFACT_TYPE: &str = "application/vnd.quiver.model.v1";
pub const MODEL_CONFIG_MEDIA_TYPE: &str = "application/vnd.quiver.model.config.v1+json";
pub const MODEL_LAYER_MEDIA_TYPE: &str = "application/vnd.quiver.model.layer.v1.onnx";
pub const PRECOMPILED_ARTIFACT_TYPE: &str = "application/vnd.quiver.precompiled.v1";
pub const PRECOMPILED_CONFIG_MEDIA_TYPE: &str = "application/vnd.quiver.precompiled.config.v1+json";
pub const PRECOMPILED_LAYER_MEDIA_TYPE: &str = "application/vnd.quiver.precompiled.layer.v1.cwasm";
/// The manifest annotation that carries the hex HMAC of a precompiled artifact.
pub const PRECOMPILED_MAC_ANNOTATION: &str = "dev.quiver.precompiled.mac";
/// The largest precompiled artifact a host pulls (native code is several times
/// the component's size; a 64 MiB component compiles to well under this).
pub const MAX_PRECOMPILED_SIZE: u64 = 512 * 1024 * 1024;
/// The shortest key `--precompiled-key-file` takes.
pub const MIN_PRECOMPILED_KEY: usize = 32;

/// What an artifact is, which picks its repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    Component,
    Model,
    /// A component's code compiled by one engine.
    Precompiled,
}

impl Artifact {
    fn segment(self) -> &'static str {
        match self {
            Artifact::Component => "fn",
            Artifact::Model => "model",
            Artifact::Precompiled => "aot",
        }
    }
}

pub struct OciStore {
    client: oci_wasm::WasmClient,
    auth: RegistryAuth,
    /// `HOST[:PORT]`
    registry: String,
    /// The repository prefix (`quiver`), no leading or trailing `/`.
    base: String,
    /// The hosts' shared key for precompiled code; none: never pushed or pulled.
    precompiled_key: Option<ring::hmac::Key>,
    /// Precompiled pulls by outcome: `loaded`, `absent` (none pushed for this
    /// engine, or the registry failed) and `refused` (a bad MAC or layer).
    precompiled_pulls: prometheus::IntCounterVec,
}

/// Where a precompiled artifact belongs and what it must be compiled from.
pub struct CodeOf<'a> {
    pub tenant: &'a str,
    pub name: &'a str,
    pub version: &'a str,
    /// The component's digest, `sha256:<hex>`.
    pub component: &'a str,
    /// The engine's hash ([`crate::runtime::Runtime::engine_hash`]).
    pub engine: &'a str,
}

impl CodeOf<'_> {
    /// What the MAC covers: every field that picks the code, and the code's digest.
    fn mac_message(&self, code_digest: &str) -> String {
        format!(
            "quiver-precompiled-v1\n{}\n{}\n{}\n{}\n{}\n{code_digest}",
            self.tenant, self.name, self.version, self.component, self.engine
        )
    }
}

/// Why a precompiled pull brought nothing.
#[derive(Debug)]
pub enum PrecompiledMiss {
    /// None pushed for this engine, or the registry could not be read.
    Absent(String),
    /// One is there but fails its checks: not loaded, ever.
    Refused(String),
}

impl std::fmt::Display for PrecompiledMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrecompiledMiss::Absent(why) => write!(f, "no precompiled code: {why}"),
            PrecompiledMiss::Refused(why) => write!(f, "precompiled code refused: {why}"),
        }
    }
}

impl OciStore {
    /// Parse `oci://HOST[:PORT]/PATH`.
    pub fn open(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("oci://")
            .ok_or_else(|| format!("`{url}` is not an oci://HOST[:PORT]/PATH registry"))?;
        let (registry, base) = rest.split_once('/').unwrap_or((rest, ""));
        let base = base.trim_matches('/');
        let valid_path = base.split('/').all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        });
        if registry.is_empty() || base.is_empty() || !valid_path {
            return Err(format!(
                "`{url}`: expected oci://HOST[:PORT]/PATH, PATH lower-case `a-z0-9._-` segments"
            ));
        }
        let (client, auth) = client_for(registry);
        let precompiled_pulls = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "quiver_precompiled_pulls_total",
                "Pulls of precompiled code from the OCI registry, by outcome (loaded, absent, refused)",
            ),
            &["outcome"],
        )
        .map_err(|e| e.to_string())?;
        Ok(OciStore {
            client,
            auth,
            registry: registry.to_string(),
            base: base.to_string(),
            precompiled_key: None,
            precompiled_pulls,
        })
    }

    /// Push and pull precompiled code, MACed with `key` (at least
    /// [`MIN_PRECOMPILED_KEY`] bytes; every host sharing the registry needs it).
    pub fn with_precompiled_key(mut self, key: &[u8]) -> Result<Self, String> {
        if key.len() < MIN_PRECOMPILED_KEY {
            return Err(format!(
                "the precompiled-code key is {} bytes; at least {MIN_PRECOMPILED_KEY} are needed",
                key.len()
            ));
        }
        self.precompiled_key = Some(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key));
        Ok(self)
    }

    pub fn precompiled(&self) -> bool {
        self.precompiled_key.is_some()
    }

    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![Box::new(self.precompiled_pulls.clone())]
    }

    fn precompiled_reference(&self, code: &CodeOf<'_>) -> Reference {
        Reference::with_tag(
            self.registry.clone(),
            self.repository(Artifact::Precompiled, code.tenant, code.name),
            format!("{}-{}", Self::tag(code.version), code.engine),
        )
    }

    /// Push `bytes`, the code compiled from `code.component`, with its MAC. Without
    /// a key, pushes nothing (`Ok(None)`).
    pub async fn push_precompiled(
        &self,
        code: &CodeOf<'_>,
        bytes: Vec<u8>,
    ) -> anyhow::Result<Option<String>> {
        let Some(key) = &self.precompiled_key else {
            return Ok(None);
        };
        let reference = self.precompiled_reference(code);
        let code_digest = quiver_registry::Digest::of(&bytes).to_string();
        let mac = ring::hmac::sign(key, code.mac_message(&code_digest).as_bytes());
        let layers = vec![ImageLayer::new(
            bytes,
            PRECOMPILED_LAYER_MEDIA_TYPE.to_string(),
            None,
        )];
        let config = Config::new(
            serde_json::to_vec(&serde_json::json!({
                "component": code.component,
                "engine": code.engine,
                "quiver": env!("CARGO_PKG_VERSION"),
            }))?,
            PRECOMPILED_CONFIG_MEDIA_TYPE.to_string(),
            None,
        );
        let mut notes = annotations(code.name, code.version);
        notes.insert(
            PRECOMPILED_MAC_ANNOTATION.to_string(),
            hex::encode(mac.as_ref()),
        );
        let mut manifest = OciImageManifest::build(&layers, &config, Some(notes));
        manifest.artifact_type = Some(PRECOMPILED_ARTIFACT_TYPE.to_string());
        let client: &Client = self.client.as_ref();
        let pushed = client
            .push(&reference, &layers, config, &self.auth, Some(manifest))
            .await
            .map_err(|e| anyhow::anyhow!("pushing {reference}: {e:#}"))?;
        Ok(Some(pushed.manifest_url))
    }

    /// The code compiled from `code.component` for this engine, if another host
    /// pushed it and its MAC verifies. Counted by outcome.
    pub async fn pull_precompiled(&self, code: &CodeOf<'_>) -> Result<Vec<u8>, PrecompiledMiss> {
        let got = self.pull_precompiled_uncounted(code).await;
        let outcome = match &got {
            Ok(_) => "loaded",
            Err(PrecompiledMiss::Absent(_)) => "absent",
            Err(PrecompiledMiss::Refused(_)) => "refused",
        };
        self.precompiled_pulls.with_label_values(&[outcome]).inc();
        got
    }

    async fn pull_precompiled_uncounted(
        &self,
        code: &CodeOf<'_>,
    ) -> Result<Vec<u8>, PrecompiledMiss> {
        use PrecompiledMiss::{Absent, Refused};
        let Some(key) = &self.precompiled_key else {
            return Err(Absent("no --precompiled-key-file".into()));
        };
        let reference = self.precompiled_reference(code);
        let client: &Client = self.client.as_ref();
        let (manifest, _) = client
            .pull_image_manifest(&reference, &self.auth)
            .await
            .map_err(|e| Absent(format!("{reference}: {e}")))?;
        let refused = |why: String| Refused(format!("{reference}: {why}"));
        if manifest.artifact_type.as_deref() != Some(PRECOMPILED_ARTIFACT_TYPE) {
            return Err(refused(format!(
                "the artifact type is {:?}, not {PRECOMPILED_ARTIFACT_TYPE}",
                manifest.artifact_type
            )));
        }
        let [layer] = manifest.layers.as_slice() else {
            return Err(refused(format!(
                "{} layers, not one",
                manifest.layers.len()
            )));
        };
        if layer.media_type != PRECOMPILED_LAYER_MEDIA_TYPE {
            return Err(refused(format!("a `{}` layer", layer.media_type)));
        }
        let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
        if size > MAX_PRECOMPILED_SIZE {
            return Err(refused(format!(
                "{} bytes; at most {MAX_PRECOMPILED_SIZE} are taken",
                layer.size
            )));
        }
        let mac = manifest
            .annotations
            .as_ref()
            .and_then(|a| a.get(PRECOMPILED_MAC_ANNOTATION))
            .and_then(|m| hex::decode(m).ok())
            .ok_or_else(|| refused(format!("no hex `{PRECOMPILED_MAC_ANNOTATION}`")))?;
        // Checked before the layer is read: a forged manifest costs no download.
        ring::hmac::verify(key, code.mac_message(&layer.digest).as_bytes(), &mac)
            .map_err(|_| refused("its MAC does not verify under this host's key".into()))?;
        // The bytes must hash to the digest the MAC covers.
        self.client
            .auth(&reference, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| Absent(format!("authenticating to {}: {e:#}", self.registry)))?;
        read_layer(&self.client, &reference, &layer.digest, size)
            .await
            .map_err(|e| refused(format!("{e:#}")))
    }

    /// `oci://HOST/PATH` as given (for logs and `/healthz`).
    pub fn describe(&self) -> String {
        format!("oci://{}/{}", self.registry, self.base)
    }

    /// `PATH/<tenant>/<fn|model>/<name>`
    pub fn repository(&self, what: Artifact, tenant: &str, name: &str) -> String {
        format!("{}/{tenant}/{}/{name}", self.base, what.segment())
    }

    /// A version as a tag (`+` is not allowed in one).
    pub fn tag(version: &str) -> String {
        version.replace('+', "_")
    }

    fn reference(&self, what: Artifact, tenant: &str, name: &str, version: &str) -> Reference {
        Reference::with_tag(
            self.registry.clone(),
            self.repository(what, tenant, name),
            Self::tag(version),
        )
    }

    /// Push a component as a Wasm OCI artifact; the manifest's URL.
    pub async fn push_component(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        bytes: Vec<u8>,
    ) -> anyhow::Result<String> {
        let reference = self.reference(Artifact::Component, tenant, name, version);
        let (config, layer) = oci_wasm::WasmConfig::from_raw_component(bytes, None)?;
        let pushed = self
            .client
            .push(
                &reference,
                &self.auth,
                layer,
                config,
                Some(annotations(name, version)),
            )
            .await
            .map_err(|e| anyhow::anyhow!("pushing {reference}: {e:#}"))?;
        Ok(pushed.manifest_url)
    }

    /// Push a model as an OCI artifact; the manifest's URL.
    pub async fn push_model(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        bytes: Vec<u8>,
    ) -> anyhow::Result<String> {
        let reference = self.reference(Artifact::Model, tenant, name, version);
        let layers = vec![ImageLayer::new(
            bytes,
            MODEL_LAYER_MEDIA_TYPE.to_string(),
            None,
        )];
        let config = Config::new(
            serde_json::to_vec(
                &serde_json::json!({ "name": name, "version": version, "format": "onnx" }),
            )?,
            MODEL_CONFIG_MEDIA_TYPE.to_string(),
            None,
        );
        let mut manifest =
            OciImageManifest::build(&layers, &config, Some(annotations(name, version)));
        manifest.artifact_type = Some(MODEL_ARTIFACT_TYPE.to_string());
        let client: &Client = self.client.as_ref();
        let pushed = client
            .push(&reference, &layers, config, &self.auth, Some(manifest))
            .await
            .map_err(|e| anyhow::anyhow!("pushing {reference}: {e:#}"))?;
        Ok(pushed.manifest_url)
    }

    /// Pull the layer `digest` (`sha256:…`) of `name@version`, refusing more than
    /// `size` bytes and bytes whose SHA-256 is not `digest`.
    pub async fn pull_layer(
        &self,
        what: Artifact,
        tenant: &str,
        name: &str,
        version: &str,
        digest: &str,
        size: u64,
    ) -> anyhow::Result<Vec<u8>> {
        let reference = self.reference(what, tenant, name, version);
        self.client
            .auth(&reference, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(|e| anyhow::anyhow!("authenticating to {}: {e:#}", self.registry))?;
        read_layer(&self.client, &reference, digest, size).await
    }
}

/// A client for `registry` (`HOST[:PORT]`): plain HTTP to loopback, else HTTPS.
fn client_for(registry: &str) -> (oci_wasm::WasmClient, RegistryAuth) {
    let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
    let protocol = match matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        true => ClientProtocol::HttpsExcept(vec![registry.to_string()]),
        false => ClientProtocol::Https,
    };
    let client = Client::new(ClientConfig {
        protocol,
        ..Default::default()
    });
    let auth = match (
        std::env::var("QUIVER_REGISTRY_USERNAME"),
        std::env::var("QUIVER_REGISTRY_PASSWORD"),
    ) {
        (Ok(user), Ok(password)) => RegistryAuth::Basic(user, password),
        _ => RegistryAuth::Anonymous,
    };
    (oci_wasm::WasmClient::new(client), auth)
}

/// Pull a component any tool pushed: `oci://HOST[:PORT]/REPO:TAG` (or
/// `@sha256:…`), a Wasm OCI artifact with exactly one `application/wasm` layer of at
/// most `limit` bytes, whose digest is checked. Returns the bytes, the repository's
/// last segment and the tag.
pub async fn pull_component(
    url: &str,
    limit: u64,
) -> anyhow::Result<(Vec<u8>, String, Option<String>)> {
    let text = url
        .strip_prefix("oci://")
        .ok_or_else(|| anyhow::anyhow!("`{url}` is not oci://HOST/REPO:TAG"))?;
    let reference: Reference = text
        .parse()
        .map_err(|e| anyhow::anyhow!("`{url}` is not an OCI reference: {e}"))?;
    let (client, auth) = client_for(reference.registry());
    let (manifest, _config, _) = client.pull_manifest_and_config(&reference, &auth).await?;
    // `pull_manifest_and_config` refused anything but exactly one layer.
    let layer = &manifest.layers[0];
    if layer.media_type != oci_wasm::WASM_LAYER_MEDIA_TYPE {
        anyhow::bail!(
            "{reference}: the layer is `{}`, not `{}`",
            layer.media_type,
            oci_wasm::WASM_LAYER_MEDIA_TYPE
        );
    }
    let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
    if size > limit {
        anyhow::bail!(
            "{reference}: the layer is {} bytes; at most {limit} are taken",
            layer.size
        );
    }
    let bytes = read_layer(&client, &reference, &layer.digest, size).await?;
    let name = reference
        .repository()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    Ok((bytes, name, reference.tag().map(str::to_string)))
}

/// The layer `digest` of `reference`: at most `size` bytes, whose SHA-256 must be
/// `digest`.
async fn read_layer(
    client: &Client,
    reference: &Reference,
    digest: &str,
    size: u64,
) -> anyhow::Result<Vec<u8>> {
    let layer = OciDescriptor {
        digest: digest.to_string(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        ..Default::default()
    };
    let mut stream = client
        .pull_blob_stream(reference, &layer)
        .await
        .map_err(|e| anyhow::anyhow!("pulling {digest} of {reference}: {e:#}"))?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| anyhow::anyhow!("pulling {digest} of {reference}: {e}"))?;
        if out.len() as u64 + chunk.len() as u64 > size {
            anyhow::bail!("{reference} sent more than the {size} bytes of {digest}: refused");
        }
        out.extend_from_slice(&chunk);
    }
    let got = quiver_registry::Digest::of(&out).to_string();
    if got != digest {
        anyhow::bail!("{reference}: the layer pulled as {digest} hashes to {got}: refused");
    }
    Ok(out)
}

fn annotations(name: &str, version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "org.opencontainers.image.title".to_string(),
            name.to_string(),
        ),
        (
            "org.opencontainers.image.version".to_string(),
            version.to_string(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_urls_are_checked() {
        let s = OciStore::open("oci://127.0.0.1:5000/quiver").unwrap();
        assert_eq!(
            s.repository(Artifact::Component, "acme", "f"),
            "quiver/acme/fn/f"
        );
        assert_eq!(
            s.repository(Artifact::Model, "acme", "m"),
            "quiver/acme/model/m"
        );
        assert_eq!(OciStore::tag("1.2.3+build.7"), "1.2.3_build.7");
        for bad in [
            "http://127.0.0.1:5000/q",
            "oci://127.0.0.1:5000",
            "oci://127.0.0.1:5000/",
            "oci:///q",
            "oci://h/Upper",
            "oci://h/a//b",
        ] {
            assert!(OciStore::open(bad).is_err(), "{bad}");
        }
    }
}
