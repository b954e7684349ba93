//! `quiver tenants|tokens|audit|usage`: thin clients of the tenancy admin API.

use super::client::Client;
use crate::tenancy::Scope;
use reqwest::Method;
use serde_json::{json, Value};

#[derive(clap::Subcommand, Debug)]
pub enum TenantsCommand {
    /// Create a tenant (platform admin).
    Create { name: String },
    /// List tenants with their quotas and grants (platform admin).
    Ls,
    /// Set a tenant's quotas (platform admin); only the ones named change, 0 removes one.
    SetQuota {
        name: String,
        /// Requests per second (token bucket); over it is 429 with Retry-After.
        #[arg(long)]
        rate: Option<f64>,
        /// Bucket size (default: one second of `--rate`).
        #[arg(long)]
        burst: Option<u64>,
        #[arg(long)]
        max_functions: Option<u64>,
        /// Bytes of components and models, every version (e.g. 1GiB).
        #[arg(long)]
        registry_bytes: Option<bytesize::ByteSize>,
        /// Ceiling over `[limits] memory` per instance.
        #[arg(long)]
        memory: Option<bytesize::ByteSize>,
        /// Ceiling over `[limits] timeout` per invocation (e.g. 5s).
        #[arg(long)]
        cpu_time: Option<humantime::Duration>,
        /// Invocations running at once across the tenant's functions.
        #[arg(long)]
        max_instances: Option<u64>,
        /// Bytes in the (embedded) feature store.
        #[arg(long)]
        feature_bytes: Option<bytesize::ByteSize>,
    },
    /// Grant a capability: `quiver tenants grant acme outbound "https://*.example.com"`,
    /// or trust a signing key: `quiver tenants grant acme signer ed25519:<hex>` (from
    /// then on the tenant's components must be signed by a key it trusts).
    Grant {
        name: String,
        capability: String,
        pattern: String,
    },
    /// Stop trusting a signing key: `quiver tenants revoke acme signer ed25519:<hex>`.
    Revoke {
        name: String,
        capability: String,
        pattern: String,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum TokensCommand {
    /// Create a token for `--tenant` (shown once; only its hash is stored).
    Create {
        #[arg(long, value_enum, default_value = "invoke")]
        scope: Scope,
        /// Expire after this long (e.g. 30d).
        #[arg(long)]
        expires: Option<humantime::Duration>,
    },
    /// List `--tenant`'s tokens (ids, scopes, expiry; never the secrets).
    Ls,
    /// Revoke a token of `--tenant` by id.
    Revoke { id: String },
}

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Recompute the hash chain; fails naming the first entry that does not follow.
    Verify,
}

fn print(json_out: bool, v: &Value, text: impl FnOnce(&Value) -> String) {
    match json_out {
        true => println!("{v}"),
        false => println!("{}", text(v)),
    }
}

fn bytes(b: Option<bytesize::ByteSize>) -> Option<u64> {
    b.map(|b| b.as_u64())
}

pub async fn tenants(client: &Client, cmd: TenantsCommand, json_out: bool) -> anyhow::Result<()> {
    match cmd {
        TenantsCommand::Create { name } => {
            let v = client
                .admin_call(Method::POST, "tenants", Some(&json!({ "name": name })))
                .await?;
            print(json_out, &v, |v| {
                format!("created tenant {}", v["name"].as_str().unwrap_or("?"))
            });
        }
        TenantsCommand::Ls => {
            let v = client.admin_call(Method::GET, "tenants", None).await?;
            print(json_out, &v, |v| {
                v["tenants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        format!(
                            "{}\tquota {}\toutbound {}\tsigners {}",
                            t["name"].as_str().unwrap_or("?"),
                            t["quota"],
                            t["outbound"],
                            t["signers"]
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        TenantsCommand::SetQuota {
            name,
            rate,
            burst,
            max_functions,
            registry_bytes,
            memory,
            cpu_time,
            max_instances,
            feature_bytes,
        } => {
            let quota = crate::tenancy::Quota {
                rate,
                burst,
                max_functions,
                registry_bytes: bytes(registry_bytes),
                memory: bytes(memory),
                cpu_ms: cpu_time.map(|d| d.as_millis() as u64),
                max_instances,
                feature_bytes: bytes(feature_bytes),
            };
            let v = client
                .admin_call(
                    Method::PUT,
                    &format!("tenants/{name}/quota"),
                    Some(&serde_json::to_value(&quota)?),
                )
                .await?;
            print(json_out, &v, |v| format!("{name}: quota {}", v["quota"]));
        }
        TenantsCommand::Grant {
            name,
            capability,
            pattern,
        } => {
            let v = client
                .admin_call(
                    Method::POST,
                    &format!("tenants/{name}/grants"),
                    Some(&json!({ "capability": capability, "pattern": pattern })),
                )
                .await?;
            print(json_out, &v, |v| match capability.as_str() {
                "signer" => format!("{name}: signers {}", v["signers"]),
                _ => format!("{name}: outbound {}", v["outbound"]),
            });
        }
        TenantsCommand::Revoke {
            name,
            capability,
            pattern,
        } => {
            let v = client
                .admin_call(
                    Method::DELETE,
                    &format!("tenants/{name}/grants"),
                    Some(&json!({ "capability": capability, "pattern": pattern })),
                )
                .await?;
            print(json_out, &v, |v| {
                format!("{name}: signers {}", v["signers"])
            });
        }
    }
    Ok(())
}

pub async fn tokens(client: &Client, cmd: TokensCommand, json_out: bool) -> anyhow::Result<()> {
    let base = format!("tenants/{}/tokens", client.tenant());
    match cmd {
        TokensCommand::Create { scope, expires } => {
            let body = json!({ "scope": scope, "expires_in": expires.map(|d| d.as_secs()) });
            let v = client.admin_call(Method::POST, &base, Some(&body)).await?;
            print(json_out, &v, |v| {
                format!(
                    "{}\n(token {} for tenant {}, scope {}: shown once, store it now)",
                    v["token"].as_str().unwrap_or("?"),
                    v["info"]["id"].as_str().unwrap_or("?"),
                    client.tenant(),
                    v["info"]["scope"].as_str().unwrap_or("?")
                )
            });
        }
        TokensCommand::Ls => {
            let v = client.admin_call(Method::GET, &base, None).await?;
            print(json_out, &v, |v| {
                v["tokens"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| {
                        let state = match (&t["revoked_at"], &t["expires_at"]) {
                            (Value::Number(_), _) => "revoked".to_string(),
                            (_, Value::Number(e)) => format!("expires at {e}"),
                            _ => "no expiry".to_string(),
                        };
                        format!(
                            "{}\t{}\t{state}",
                            t["id"].as_str().unwrap_or("?"),
                            t["scope"].as_str().unwrap_or("?")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        TokensCommand::Revoke { id } => {
            let v = client
                .admin_call(Method::DELETE, &format!("{base}/{id}"), None)
                .await?;
            print(json_out, &v, |_| format!("revoked {id}"));
        }
    }
    Ok(())
}

pub async fn audit(
    client: &Client,
    cmd: Option<AuditCommand>,
    all: bool,
    json_out: bool,
) -> anyhow::Result<()> {
    if let Some(AuditCommand::Verify) = cmd {
        let v = client.admin_call(Method::GET, "audit/verify", None).await?;
        print(json_out, &v, |v| match v["ok"].as_bool() {
            Some(true) => format!(
                "ok: {} entries, head {}",
                v["entries"],
                v["head"].as_str().unwrap_or("?")
            ),
            _ => format!(
                "BROKEN at entry {}: {}",
                v["broken_at"],
                v["reason"].as_str().unwrap_or("?")
            ),
        });
        if v["ok"].as_bool() != Some(true) {
            anyhow::bail!("the audit log does not verify");
        }
        return Ok(());
    }
    let path = match all {
        true => "audit".to_string(),
        false => format!("tenants/{}/audit", client.tenant()),
    };
    let v = client.admin_call(Method::GET, &path, None).await?;
    print(json_out, &v, |v| {
        v["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    e["seq"],
                    e["at"],
                    e["actor"].as_str().unwrap_or("?"),
                    e["action"].as_str().unwrap_or("?"),
                    e["target"].as_str().unwrap_or("?"),
                    e["result"].as_str().unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(())
}

pub async fn usage(client: &Client, json_out: bool) -> anyhow::Result<()> {
    let v = client
        .admin_call(
            Method::GET,
            &format!("tenants/{}/usage", client.tenant()),
            None,
        )
        .await?;
    print(json_out, &v, |v| {
        let u = &v["usage"];
        format!(
            "tenant {}\ninvocations {}\ncpu_ms {}\nmemory_gb_seconds {}\ninference_calls {}\negress_calls {} (denied {})\nregistry_bytes {}\nfeature_bytes {}",
            v["tenant"].as_str().unwrap_or("?"),
            u["invocations"], u["cpu_ms"], u["memory_gb_seconds"], u["inference_calls"],
            u["egress_calls"], u["egress_denied"], v["registry_bytes"], v["feature_bytes"]
        )
    });
    Ok(())
}
