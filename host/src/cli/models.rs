//! `quiver models push|ls|versions`: models as registry artifacts.

use super::client::Client;
use super::{s, short};
use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// Store a model version (ONNX). Its inputs and outputs are read from the model.
    Push {
        file: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        /// Lineage: digest of the training dataset.
        #[arg(long)]
        dataset_digest: Option<String>,
        /// Lineage: the trainer function (NAME@VERSION) that produced it.
        #[arg(long)]
        trainer: Option<String>,
        /// Lineage: a training metric, `name=value` (repeatable).
        #[arg(long = "metric", value_name = "NAME=VALUE")]
        metrics: Vec<String>,
    },
    /// The newest version of every model.
    Ls,
    /// Every version of one model.
    Versions { name: String },
    /// Delete a model version: NAME@VERSION. Refused while a function binds it,
    /// unless --force.
    Rm {
        model: String,
        #[arg(long)]
        force: bool,
    },
}

fn lineage(
    dataset_digest: Option<String>,
    trainer: Option<String>,
    metrics: &[String],
) -> anyhow::Result<Option<Value>> {
    let mut m = serde_json::Map::new();
    for kv in metrics {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--metric `{kv}` is not NAME=VALUE"))?;
        let v: f64 = v
            .parse()
            .with_context(|| format!("--metric `{kv}`: `{v}` is not a number"))?;
        m.insert(k.to_string(), json!(v));
    }
    if dataset_digest.is_none() && trainer.is_none() && m.is_empty() {
        return Ok(None);
    }
    Ok(Some(json!({
        "dataset_digest": dataset_digest,
        "trainer": trainer,
        "metrics": m,
    })))
}

fn tensors(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{}:{}{}", s(&t["name"]), s(&t["datatype"]), t["shape"]))
        .collect::<Vec<_>>()
        .join(",")
}

fn print_row(m: &Value) {
    println!(
        "{:<20} {:<10} {:>9} {:<24} {:<24} {}",
        s(&m["name"]),
        s(&m["version"]),
        m["size"],
        tensors(&m["inputs"]),
        tensors(&m["outputs"]),
        short(&m["digest"])
    );
}

fn print_header() {
    println!(
        "{:<20} {:<10} {:>9} {:<24} {:<24} DIGEST",
        "NAME", "VERSION", "SIZE", "INPUTS", "OUTPUTS"
    );
}

pub async fn run(client: &Client, cmd: ModelsCommand, json_out: bool) -> anyhow::Result<()> {
    let out = match cmd {
        ModelsCommand::Push {
            file,
            name,
            version,
            dataset_digest,
            trainer,
            metrics,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let meta = json!({
                "name": name,
                "version": version,
                "lineage": lineage(dataset_digest, trainer, &metrics)?,
            });
            let out = client.push_model(&meta, bytes).await?;
            if !json_out {
                println!(
                    "{} model {}@{} ({} bytes) {}",
                    match out["unchanged"] == true {
                        true => "unchanged",
                        false => "pushed",
                    },
                    s(&out["name"]),
                    s(&out["version"]),
                    out["size"],
                    s(&out["digest"])
                );
                println!("  inputs  {}", tensors(&out["inputs"]));
                println!("  outputs {}", tensors(&out["outputs"]));
                return Ok(());
            }
            out
        }
        ModelsCommand::Ls => client.get("models").await?,
        ModelsCommand::Versions { name } => client.get(&format!("models/{name}/versions")).await?,
        ModelsCommand::Rm { model, force } => {
            let (name, version, out) = client
                .delete_version("models", &model, force, "models rm")
                .await?;
            if !json_out {
                println!("deleted model {name}@{version}");
                return Ok(());
            }
            out
        }
    };
    match json_out {
        true => println!("{out}"),
        false => {
            print_header();
            let rows = out.get("models").or_else(|| out.get("versions"));
            rows.and_then(Value::as_array)
                .into_iter()
                .flatten()
                .for_each(print_row);
        }
    }
    Ok(())
}
