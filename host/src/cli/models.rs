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
        /// Lineage: the version of this model it was trained from.
        #[arg(long)]
        parent: Option<String>,
        /// Serve it with no code: deploy the first-party inference function as
        /// function NAME@VERSION bound to this version, so `/v2/models/NAME/infer`
        /// answers (`quiver rollback NAME` goes back to the previous model).
        #[arg(long)]
        serve: bool,
    },
    /// Point an alias (`champion`, `challenger`...) at a version; `[models] m =
    /// "NAME@ALIAS"` follows it. Every move is kept: `quiver models history`.
    Alias {
        name: String,
        alias: String,
        version: String,
        /// Why (kept in the history).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Where each alias of a model points, and every move: who, when, from, to, why.
    History { name: String },
    /// Roll NAME@VERSION out against where an alias (`champion`) points: shadow,
    /// then a growing share of the calls, each step judged by the automatic
    /// analysis (error rate, p99, score distribution), which promotes (moves the
    /// alias) or rolls back by itself. `quiver models rollouts NAME` follows it.
    Rollout {
        model: String,
        /// Comma-separated: `shadow`, then rising percentages ending at 100.
        #[arg(long, default_value = "shadow,10,50,100")]
        steps: String,
        /// How long each step is held before it is judged.
        #[arg(long, default_value = "30s")]
        interval: String,
        /// Calls each arm needs in an interval to be judged.
        #[arg(long, default_value_t = 20)]
        min_calls: u32,
        /// Failed judgements tolerated before it rolls back.
        #[arg(long, default_value_t = 0)]
        failure_limit: u32,
        /// The whole rollout ends by then or rolls back.
        #[arg(long, default_value = "15m")]
        deadline: String,
        #[arg(long, default_value_t = 0.01)]
        max_error_rate: f64,
        #[arg(long, default_value_t = 2.0)]
        max_p99_ratio: f64,
        #[arg(long, default_value_t = 10.0)]
        p99_slack_ms: f64,
        /// The score-distribution test's level (two-sample KS).
        #[arg(long, default_value_t = 0.01)]
        alpha: f64,
        /// The smallest KS statistic that fails a step.
        #[arg(long, default_value_t = 0.1)]
        min_shift: f64,
        /// The numeric output compared.
        #[arg(long, default_value = "score")]
        output: String,
        /// The alias rolled out against (and moved on promotion).
        #[arg(long, default_value = "champion")]
        alias: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// A model's rollouts, newest first, with every judged step.
    Rollouts { name: String },
    /// End a model's running rollout; the alias stays where it is.
    RolloutAbort {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// NAME@VERSION and the versions it was trained from, back to the first.
    Lineage { model: String },
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
    parent: Option<String>,
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
    if dataset_digest.is_none() && trainer.is_none() && m.is_empty() && parent.is_none() {
        return Ok(None);
    }
    if let Some(p) = &parent {
        semver::Version::parse(p).with_context(|| format!("--parent `{p}` is not a version"))?;
    }
    Ok(Some(json!({
        "dataset_digest": dataset_digest,
        "trainer": trainer,
        "metrics": m,
        "parent": parent,
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
            parent,
            serve,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let meta = json!({
                "name": name,
                "version": version,
                "lineage": lineage(dataset_digest, trainer, &metrics, parent)?,
            });
            let mut out = client.push_model(&meta, bytes).await?;
            let served = match serve {
                true => {
                    let version = s(&out["version"]).to_string();
                    let f = super::serve_model::serve(client, &out, &format!("={version}"), &name)
                        .await?;
                    out["served"] = f.clone();
                    Some(f)
                }
                false => None,
            };
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
                if let Some(f) = served {
                    println!(
                        "served as function {}@{}: POST /v2/models/{}/infer",
                        s(&f["name"]),
                        s(&f["version"]),
                        s(&f["name"])
                    );
                }
                return Ok(());
            }
            out
        }
        ModelsCommand::Alias {
            name,
            alias,
            version,
            reason,
        } => {
            let body = json!({ "version": version, "reason": reason });
            let out = client
                .put_json(&format!("models/{name}/aliases/{alias}"), &body)
                .await?;
            if !json_out {
                match out["moved"].is_null() {
                    true => println!("{name}@{alias} already is {version}"),
                    false => println!(
                        "{name}@{alias}: {} -> {version}",
                        out["moved"]["from"].as_str().unwrap_or("(new)")
                    ),
                }
                return Ok(());
            }
            out
        }
        ModelsCommand::Rollout {
            model,
            steps,
            interval,
            min_calls,
            failure_limit,
            deadline,
            max_error_rate,
            max_p99_ratio,
            p99_slack_ms,
            alpha,
            min_shift,
            output,
            alias,
            reason,
        } => {
            let (name, version) = crate::functions::split_ref(&model);
            let version = version.with_context(|| {
                format!("name the candidate: `quiver models rollout {name}@VERSION`")
            })?;
            let steps: Vec<Value> = steps
                .split(',')
                .map(|s| match s.trim().parse::<u32>() {
                    Ok(p) => json!(p),
                    Err(_) => json!(s.trim()),
                })
                .collect();
            let body = json!({
                "version": version, "reason": reason,
                "analysis": {
                    "steps": steps, "interval": interval, "min_calls": min_calls,
                    "failure_limit": failure_limit, "deadline": deadline,
                    "max_error_rate": max_error_rate, "max_p99_ratio": max_p99_ratio,
                    "p99_slack_ms": p99_slack_ms, "alpha": alpha, "min_shift": min_shift,
                    "output": output, "alias": alias,
                },
            });
            let out = client
                .post_json(&format!("models/{name}/rollouts"), &body)
                .await?;
            if !json_out {
                println!(
                    "rollout {} of {name}@{version} against {alias} ({}): step {}",
                    out["id"],
                    s(&out["baseline"]),
                    s(&out["step_label"])
                );
                return Ok(());
            }
            out
        }
        ModelsCommand::Rollouts { name } => {
            let out = client.get(&format!("models/{name}/rollouts")).await?;
            if !json_out {
                for r in out["rollouts"].as_array().into_iter().flatten() {
                    println!(
                        "rollout {}  {name}@{} against {} ({})  {}  step {}  {}",
                        r["id"],
                        s(&r["candidate"]),
                        s(&r["alias"]),
                        s(&r["baseline"]),
                        s(&r["state"]),
                        s(&r["step_label"]),
                        s(&r["reason"])
                    );
                    for h in r["history"].as_array().into_iter().flatten() {
                        println!(
                            "  step {}  {:<12} {}",
                            h["step"],
                            s(&h["outcome"]),
                            s(&h["detail"]["reason"])
                        );
                    }
                }
                return Ok(());
            }
            out
        }
        ModelsCommand::RolloutAbort { name, reason } => {
            let out = client
                .post_json(
                    &format!("models/{name}/rollouts/abort"),
                    &json!({ "reason": reason }),
                )
                .await?;
            if !json_out {
                println!("rollout {} of {name}: {}", out["id"], s(&out["state"]));
                return Ok(());
            }
            out
        }
        ModelsCommand::History { name } => {
            let out = client.get(&format!("models/{name}/aliases")).await?;
            if !json_out {
                for (alias, v) in out["aliases"].as_object().into_iter().flatten() {
                    println!("{alias} -> {}", s(v));
                }
                for m in out["history"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<12} {} -> {}  by {}  {}",
                        s(&m["at"]),
                        s(&m["alias"]),
                        m["from"].as_str().unwrap_or("(new)"),
                        s(&m["to"]),
                        s(&m["actor"]),
                        s(&m["reason"])
                    );
                }
                return Ok(());
            }
            out
        }
        ModelsCommand::Lineage { model } => {
            let (name, version) = crate::functions::split_ref(&model);
            let version = version.with_context(|| {
                format!("name the version: `quiver models lineage {name}@VERSION`")
            })?;
            let all = client.get(&format!("models/{name}/versions")).await?;
            let versions = all["versions"].as_array().cloned().unwrap_or_default();
            let mut chain = Vec::new();
            let mut at = Some(version.to_string());
            while let Some(v) = at.take() {
                if chain.len() > versions.len() {
                    anyhow::bail!("the lineage of {name} has a cycle at {v}");
                }
                let m = versions
                    .iter()
                    .find(|m| m["version"] == v.as_str())
                    .with_context(|| format!("model `{name}@{v}` not found"))?;
                at = m["lineage"]["parent"].as_str().map(str::to_string);
                chain.push(m.clone());
            }
            if !json_out {
                for m in &chain {
                    let l = &m["lineage"];
                    println!(
                        "{name}@{}  trainer {}  dataset {}  metrics {}  {}",
                        s(&m["version"]),
                        l["trainer"].as_str().unwrap_or("-"),
                        l["dataset_digest"].as_str().unwrap_or("-"),
                        l["metrics"],
                        short(&m["digest"])
                    );
                }
                return Ok(());
            }
            json!({ "name": name, "lineage": chain })
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
