//! HTTP client of the admin API and the invoke route.

use anyhow::{bail, Context as _};
use serde_json::Value;

pub struct Client {
    http: reqwest::Client,
    base: String,
    tenant: String,
}

impl Client {
    /// `token`: sent as `Authorization: Bearer` on every request.
    pub fn new(server: &str, tenant: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                .context("the token is not a valid header value")?;
            v.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        Ok(Client {
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()?,
            base: server.trim_end_matches('/').to_string(),
            tenant: tenant.to_string(),
        })
    }

    fn admin(&self, path: &str) -> String {
        format!("{}/admin/v1/tenants/{}/{path}", self.base, self.tenant)
    }

    /// Send; the status, headers and body (JSON, or the text as a JSON string).
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::StatusCode, reqwest::header::HeaderMap, Value)> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("connecting to {} (is `quiver serve` running?)", self.base))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, headers, body))
    }

    /// Send and require success; an error status becomes the server's message.
    async fn json(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::header::HeaderMap, Value)> {
        let (status, headers, body) = self.send(req).await?;
        if !status.is_success() {
            match (body["error"]["message"].as_str(), body["error"].as_str()) {
                (Some(m), _) => bail!(
                    "{m} ({status}, {})",
                    body["error"]["code"].as_str().unwrap_or("error")
                ),
                // The Open Inference Protocol's shape: {"error": "..."}.
                (None, Some(m)) => bail!("{m} ({status})"),
                (None, None) => bail!("{status}: {body}"),
            }
        }
        Ok((headers, body))
    }

    fn invoke_request(
        &self,
        function: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/fn/{}/{function}", self.base, self.tenant))
            .header("content-type", content_type)
            .body(body)
    }

    /// Any admin call below `/admin/v1/` (`path` without the prefix).
    pub async fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}/admin/v1/{path}", self.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        Ok(self.json(req).await?.1)
    }

    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.json(self.http.get(self.admin(path))).await?.1)
    }

    /// Delete `NAME@VERSION` of a collection (`functions`, `models`); the name and
    /// version it deleted, and the server's answer. `command` names the CLI verb
    /// for the error when no version is given.
    pub async fn delete_version(
        &self,
        collection: &str,
        reference: &str,
        force: bool,
        command: &str,
    ) -> anyhow::Result<(String, String, Value)> {
        let (name, version) = crate::functions::split_ref(reference);
        let version = version.with_context(|| {
            format!("name the version to delete: `quiver {command} {name}@VERSION`")
        })?;
        let mut path = format!("{collection}/{name}/versions/{version}");
        if force {
            path.push_str("?force=true");
        }
        let out = self.json(self.http.delete(self.admin(&path))).await?.1;
        Ok((name.to_string(), version.to_string(), out))
    }

    /// POST to a platform-wide admin route (`/admin/v1/{path}`, no tenant).
    pub async fn post_platform(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}/admin/v1/{path}", self.base);
        Ok(self.json(self.http.post(url)).await?.1)
    }

    /// Publish an event to one of this tenant's topics.
    pub async fn publish_event(
        &self,
        topic: &str,
        content_type: &str,
        payload: Vec<u8>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}/events/{}/{topic}", self.base, self.tenant);
        let req = self
            .http
            .post(url)
            .header("content-type", content_type)
            .body(payload);
        Ok(self.json(req).await?.1)
    }

    /// GET a route outside `/admin/v1` (`path` without the leading slash).
    pub async fn get_root(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}/{path}", self.base);
        Ok(self.json(self.http.get(url)).await?.1)
    }

    /// POST JSON to a route outside `/admin/v1`.
    pub async fn post_root(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}/{path}", self.base);
        Ok(self.json(self.http.post(url).json(body)).await?.1)
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        Ok(self
            .json(self.http.put(self.admin(path)).json(body))
            .await?
            .1)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        Ok(self
            .json(self.http.post(self.admin(path)).json(body))
            .await?
            .1)
    }

    pub async fn deploy(
        &self,
        manifest_toml: &str,
        component: Option<Vec<u8>>,
        signature: Option<&crate::signing::Signature>,
    ) -> anyhow::Result<Value> {
        let mut form = reqwest::multipart::Form::new().text("manifest", manifest_toml.to_string());
        if let Some(bytes) = component {
            form = form.part(
                "component",
                reqwest::multipart::Part::bytes(bytes).mime_str("application/wasm")?,
            );
        }
        if let Some(sig) = signature {
            form = form.text("signature", serde_json::to_string(sig)?);
        }
        Ok(self
            .json(self.http.post(self.admin("functions")).multipart(form))
            .await?
            .1)
    }

    /// Push a model: `metadata` is `{name, version, lineage?}`.
    pub async fn push_model(&self, metadata: &Value, model: Vec<u8>) -> anyhow::Result<Value> {
        let form = reqwest::multipart::Form::new()
            .text("metadata", metadata.to_string())
            .part(
                "model",
                reqwest::multipart::Part::bytes(model).mime_str("application/octet-stream")?,
            );
        Ok(self
            .json(self.http.post(self.admin("models")).multipart(form))
            .await?
            .1)
    }

    /// Invoke `name[@version]`; returns the serving version and the result.
    pub async fn invoke(
        &self,
        function: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(String, Value)> {
        let (version, _, out) = self.invoke_with_id(function, content_type, body).await?;
        Ok((version, out))
    }

    /// [`Client::invoke`], with the request id the call answered with.
    pub async fn invoke_with_id(
        &self,
        function: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(String, String, Value)> {
        let (headers, out) = self
            .json(self.invoke_request(function, content_type, body))
            .await?;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_string()
        };
        Ok((
            header("x-quiver-version"),
            header("x-quiver-request-id"),
            out,
        ))
    }

    /// Invoke without treating an error status as a failure: the status, the
    /// server's `Retry-After` and the JSON body.
    pub async fn invoke_status(
        &self,
        function: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(reqwest::StatusCode, Option<std::time::Duration>, Value)> {
        let (status, headers, body) = self
            .send(self.invoke_request(function, content_type, body))
            .await?;
        let retry = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_secs);
        Ok((status, retry, body))
    }

    /// An Open Inference Protocol v2 `infer` call (errors are `{"error": "..."}`).
    pub async fn oip_infer(&self, model: &str, body: &Value) -> anyhow::Result<Value> {
        let req = self
            .http
            .post(format!(
                "{}/v2/tenants/{}/models/{model}/infer",
                self.base, self.tenant
            ))
            .json(body);
        Ok(self.json(req).await?.1)
    }

    pub async fn raw_get(&self, path: &str) -> anyhow::Result<String> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {text}");
        }
        Ok(text)
    }
}
