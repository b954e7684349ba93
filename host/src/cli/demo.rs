//! `quiver demo`: the whole pipeline on embedded defaults, in one process, then
//! the ML loop ([`super::demo_loop`]).

use super::client::Client;
use crate::ServerConfig;
use anyhow::Context as _;
use serde_json::{json, Value};
use std::path::Path;

const FUNCTIONS: [&str; 5] = [
    "ingest-json",
    "txn-features",
    "fraud-score",
    "hello-http",
    "fraud-pipeline",
];

/// Push the fraud model (trained by `fraud-score/model/train.py`) with its lineage.
async fn push_model(client: &Client, functions: &Path) -> anyhow::Result<Value> {
    let dir = functions.join("fraud-score/model");
    let bytes = std::fs::read(dir.join("fraud.onnx"))
        .with_context(|| format!("reading {}", dir.join("fraud.onnx").display()))?;
    let reference: Value = serde_json::from_slice(&std::fs::read(dir.join("reference.json"))?)?;
    let meta = json!({
        "name": "fraud-model",
        "version": "1.0.0",
        "lineage": {
            "dataset": format!("synthetic fraud data, seed {}", reference["seed"]),
            "trainer": "functions/fraud-score/model/train.py (scikit-learn MLP, skl2onnx)",
            "metrics": { "train_auc": reference["train_auc"], "train_accuracy": reference["train_accuracy"] },
        },
    });
    client.push_model(&meta, bytes).await
}

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
    // The demo acts as the platform admin, with the token the first start wrote.
    let token = std::fs::read_to_string(config.data_dir.join("admin-token")).map_err(|e| {
        anyhow::anyhow!(
            "reading {}: {e}",
            config.data_dir.join("admin-token").display()
        )
    })?;
    let client = Client::new(&base, tenant, Some(token.trim()))?;

    let model = push_model(&client, functions)
        .await
        .context("pushing the fraud model")?;
    n.say(&format!(
        "▶ model    {:<15} {:<6} onnx      {} (inputs {}, outputs {})",
        model["name"].as_str().unwrap_or("?"),
        model["version"].as_str().unwrap_or("?"),
        model["digest"].as_str().unwrap_or("?"),
        model["inputs"],
        model["outputs"]
    ));
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
        "  served by fraud-pipeline@{version}: ingest-json → txn-features → fraud-score \
         (fraud-model via wasi-nn)\n"
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
         feature store ({}) and fraud-score reads them by merchant, so merchant_txns grows\n",
        server.state.functions.feature_store().name()
    ));
    for line in table(&again["rows"]) {
        n.say(&line);
    }

    // The same model behind the KServe Open Inference Protocol v2.
    let oip = json!({
        "id": "demo-1",
        "inputs": [
            { "name": "log_amount", "shape": [2], "datatype": "FP64", "data": [3.0, 7.9] },
            { "name": "hour_of_day", "shape": [2], "datatype": "INT64", "data": [14, 3] },
            { "name": "merchant_z", "shape": [2], "datatype": "FP64", "data": [0.1, 2.5] },
            { "name": "merchant_known", "shape": [2], "datatype": "BOOL", "data": [true, false] },
        ],
    });
    n.say(&format!(
        "\n▶ POST /v2/tenants/{tenant}/models/fraud-score/infer (Open Inference Protocol v2)"
    ));
    let inferred = client.oip_infer("fraud-score", &oip).await?;
    for o in inferred["outputs"].as_array().into_iter().flatten() {
        n.say(&format!(
            "  {:<6} {:<5} {} {}",
            o["name"].as_str().unwrap_or("?"),
            o["datatype"].as_str().unwrap_or("?"),
            o["shape"],
            o["data"]
        ));
    }

    n.say(&format!(
        "\n▶ GET /http/{tenant}/hello-http/demo (a standard wasi:http component)"
    ));
    let hello = client
        .raw_get(&format!("/http/{tenant}/hello-http/demo"))
        .await?;
    n.say(&format!("  {}", hello.trim_end()));

    let model_bytes = std::fs::read(functions.join("fraud-score/model/fraud.onnx"))?;
    let ml_loop = super::demo_loop::run(&base, token.trim(), functions, model_bytes, &|l| n.say(l))
        .await
        .context("the ML loop")?;

    if json {
        let summary = json!({
            "server": base, "deployed": deployed,
            "model": model, "oip": inferred,
            "pipeline": { "version": version, "result": out, "again": again }, "hello_http": hello,
            "ml_loop": ml_loop,
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
