//! `quiver demo`: the whole pipeline on embedded defaults, in one process.

use super::client::Client;
use crate::ServerConfig;
use anyhow::Context as _;
use serde_json::{json, Value};
use std::path::Path;

const FUNCTIONS: [&str; 4] = [
    "ingest-json",
    "txn-features",
    "hello-http",
    "fraud-pipeline",
];

/// The narration: stdout normally, stderr under `--json` (stdout then carries one
/// summary object).
struct Narrator {
    json: bool,
}

impl Narrator {
    fn say(&self, line: &str) {
        match self.json {
            true => eprintln!("{line}"),
            false => println!("{line}"),
        }
    }
}

pub async fn run(
    config: &ServerConfig,
    functions: &Path,
    keep_serving: bool,
    tenant: &str,
    json: bool,
) -> anyhow::Result<()> {
    let n = Narrator { json };
    let server = match crate::start(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("note: {e:#}; using a free port instead");
            let mut c = config.clone();
            c.listen.set_port(0);
            crate::start(&c).await?
        }
    };
    let base = format!("http://{}", server.addr);
    n.say(&format!(
        "▶ quiver host on {base} (data in {})",
        config.data_dir.display()
    ));
    let client = Client::new(&base, tenant)?;

    let mut deployed = Vec::new();
    for f in FUNCTIONS {
        let out = super::deploy(&client, &functions.join(f), &Default::default(), !json)
            .await
            .map_err(|e| match format!("{e:#}").contains("version_conflict") {
                // Versions are immutable: a data dir made by an older build of the
                // first-party functions holds other code under the same versions.
                true => e.context(format!(
                    "deploying {f}: {} holds an older build of it; remove that directory \
                     or pass --data-dir",
                    config.data_dir.display()
                )),
                false => e.context(format!("deploying {f}")),
            })?;
        n.say(&format!(
            "▶ deployed {:<15} {:<6} {:<9} {}",
            out["name"].as_str().unwrap_or(f),
            out["version"].as_str().unwrap_or("?"),
            out["kind"].as_str().unwrap_or("?"),
            out["digest"].as_str().unwrap_or("?")
        ));
        deployed.push(out);
    }

    let sample = functions.join("fraud-pipeline/sample.json");
    let body = std::fs::read(&sample).with_context(|| format!("reading {}", sample.display()))?;
    n.say(&format!(
        "\n▶ POST /fn/{tenant}/fraud-pipeline  ({})",
        sample.display()
    ));
    let (version, out) = client
        .invoke("fraud-pipeline", "application/json", body)
        .await?;
    n.say(&format!(
        "  served by fraud-pipeline@{version}: ingest-json → txn-features\n"
    ));
    for line in table(&out["rows"]) {
        n.say(&line);
    }
    for r in out["rejected"].as_array().into_iter().flatten() {
        n.say(&format!(
            "  rejected row {}: {}",
            r["row"],
            r["reason"].as_str().unwrap_or("")
        ));
    }

    // Online features: txn-features keeps per-merchant running stats in the feature
    // store; the same transactions again show the counts grow.
    let body = std::fs::read(&sample).with_context(|| format!("reading {}", sample.display()))?;
    let (_, again) = client
        .invoke("fraud-pipeline", "application/json", body)
        .await?;
    n.say(&format!(
        "\n▶ the same request again: txn-features keeps per-merchant running stats in the \
         feature store ({}), so merchant_txns grows\n",
        server.state.functions.feature_store().name()
    ));
    for line in table(&again["rows"]) {
        n.say(&line);
    }

    n.say(&format!(
        "\n▶ GET /http/{tenant}/hello-http/demo (a standard wasi:http component)"
    ));
    let hello = client
        .raw_get(&format!("/http/{tenant}/hello-http/demo"))
        .await?;
    n.say(&format!("  {}", hello.trim_end()));

    if json {
        let summary = json!({
            "server": base, "deployed": deployed,
            "pipeline": { "version": version, "result": out, "again": again }, "hello_http": hello,
        });
        println!("{summary}");
    }
    if keep_serving {
        n.say(&format!("\n▶ serving on {base}; Ctrl-C to stop"));
        tokio::select! {
            r = server.handle => r??,
            _ = tokio::signal::ctrl_c() => {}
        }
    } else {
        n.say("\n▶ done. `quiver serve` keeps a host running; see the README's tour.");
    }
    Ok(())
}

fn table(rows: &Value) -> Vec<String> {
    let Some(rows) = rows.as_array() else {
        return Vec::new();
    };
    let Some(Value::Object(first)) = rows.first() else {
        return vec!["  (no rows)".into()];
    };
    let cols: Vec<&String> = first.keys().collect();
    let cell = |v: &Value| match v {
        Value::Number(n) => n
            .as_f64()
            .map(|f| {
                if f.fract() == 0.0 {
                    format!("{f}")
                } else {
                    format!("{f:.4}")
                }
            })
            .unwrap_or_default(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let line = |cells: Vec<String>| format!("  {}", cells.join(" "));
    let mut out = vec![line(cols.iter().map(|c| format!("{c:>14}")).collect())];
    for row in rows {
        out.push(line(
            cols.iter()
                .map(|c| format!("{:>14}", cell(&row[c.as_str()])))
                .collect(),
        ));
    }
    out
}
