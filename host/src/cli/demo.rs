//! `quiver demo`: the whole pipeline on embedded defaults, in one process.

use super::client::Client;
use crate::ServerConfig;
use anyhow::Context as _;
use serde_json::Value;
use std::path::Path;

pub async fn run(
    config: &ServerConfig,
    functions: &Path,
    keep_serving: bool,
    tenant: &str,
) -> anyhow::Result<()> {
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
    println!(
        "▶ quiver host on {base} (data in {})",
        config.data_dir.display()
    );
    let client = Client::new(&base, tenant)?;

    for f in [
        "ingest-json",
        "txn-features",
        "hello-http",
        "fraud-pipeline",
    ] {
        let out = super::deploy(&client, &functions.join(f), None, None, None, true)
            .await
            .with_context(|| format!("deploying {f}"))?;
        println!(
            "▶ deployed {:<15} {:<6} {:<9} {}",
            out["name"].as_str().unwrap_or(f),
            out["version"].as_str().unwrap_or("?"),
            out["kind"].as_str().unwrap_or("?"),
            out["digest"].as_str().unwrap_or("?")
        );
    }

    let sample = functions.join("fraud-pipeline/sample.json");
    let body = std::fs::read(&sample).with_context(|| format!("reading {}", sample.display()))?;
    println!(
        "\n▶ POST /fn/{tenant}/fraud-pipeline  ({})",
        sample.display()
    );
    let (version, out) = client
        .invoke("fraud-pipeline", "application/json", body)
        .await?;
    println!("  served by fraud-pipeline@{version}: ingest-json → txn-features\n");
    print_rows(&out["rows"]);
    for r in out["rejected"].as_array().into_iter().flatten() {
        println!(
            "  rejected row {}: {}",
            r["row"],
            r["reason"].as_str().unwrap_or("")
        );
    }

    println!("\n▶ GET /http/{tenant}/hello-http/demo (a standard wasi:http component)");
    print!(
        "  {}",
        client
            .raw_get(&format!("/http/{tenant}/hello-http/demo"))
            .await?
    );

    if keep_serving {
        println!("\n▶ serving on {base}; Ctrl-C to stop");
        tokio::select! {
            r = server.handle => r??,
            _ = tokio::signal::ctrl_c() => {}
        }
    } else {
        println!("\n▶ done. `quiver serve` keeps a host running; see the README's tour.");
    }
    Ok(())
}

fn print_rows(rows: &Value) {
    let Some(rows) = rows.as_array() else { return };
    let Some(Value::Object(first)) = rows.first() else {
        println!("  (no rows)");
        return;
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
    println!(
        "  {}",
        cols.iter()
            .map(|c| format!("{c:>14}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for row in rows {
        println!(
            "  {}",
            cols.iter()
                .map(|c| format!("{:>14}", cell(&row[c.as_str()])))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
}
