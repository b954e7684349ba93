//! `quiver feedback load FILE.csv --function NAME` sends labels for earlier
//! predictions in chunks; `quiver datasets read NAME` prints a function's logged
//! predictions (with `--labelled`, only those a label came back for).

use super::client::Client;
use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub(super) enum FeedbackCommand {
    /// Labels from a CSV file with columns `request_id`, `label` and optionally
    /// `row` (the row's index in its request, default 0).
    Load {
        file: PathBuf,
        /// The function (or pipeline) whose predictions the labels belong to.
        #[arg(long)]
        function: String,
        /// Labels per request (at most 10 000).
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum DatasetsCommand {
    /// A function's logged predictions, oldest first.
    Read {
        function: String,
        /// The window: predictions of the last DURATION.
        #[arg(long, default_value = "7d")]
        since: humantime::Duration,
        /// Only predictions a label came back for (adds a `label` column).
        #[arg(long)]
        labelled: bool,
        /// Rows at most (the newest of the window).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

pub(super) async fn feedback(
    client: &Client,
    cmd: FeedbackCommand,
    json_out: bool,
) -> anyhow::Result<()> {
    let FeedbackCommand::Load {
        file,
        function,
        batch,
    } = cmd;
    let batch = batch.clamp(1, crate::datasets::MAX_LABELS);
    let (stored, matched) = load(client, &function, &file, batch).await?;
    match json_out {
        true => println!(
            "{}",
            json!({ "function": function, "stored": stored, "matched": matched })
        ),
        false => println!(
            "stored {stored} labels for `{function}`; {matched} matched a logged prediction"
        ),
    }
    Ok(())
}

async fn load(
    client: &Client,
    function: &str,
    file: &Path,
    batch: usize,
) -> anyhow::Result<(u64, u64)> {
    let mut reader =
        csv::Reader::from_path(file).with_context(|| format!("opening {}", file.display()))?;
    let headers = reader.headers()?.clone();
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let id_at = column("request_id")
        .with_context(|| format!("{} has no `request_id` column", file.display()))?;
    let label_at =
        column("label").with_context(|| format!("{} has no `label` column", file.display()))?;
    let row_at = column("row");
    let path = format!("fn/{}/{function}/feedback", client.tenant());
    let (mut stored, mut matched) = (0u64, 0u64);
    let mut chunk = Vec::with_capacity(batch);
    let mut records = reader.records().enumerate();
    loop {
        let next = records.next();
        let done = next.is_none();
        if let Some((i, record)) = next {
            // Line numbers as an editor shows them (the header is line 1).
            let line = i + 2;
            let record = record.with_context(|| format!("{} line {line}", file.display()))?;
            let cell = |at: usize| record.get(at).unwrap_or("").trim();
            let label = super::features_load::typed(cell(label_at))
                .with_context(|| format!("{} line {line}: the label is empty", file.display()))?;
            let mut item = json!({ "request_id": cell(id_at), "label": label });
            if let Some(at) = row_at {
                let row: u32 = cell(at).parse().with_context(|| {
                    format!("{} line {line}: `row` is not a row index", file.display())
                })?;
                item["row"] = json!(row);
            }
            chunk.push(item);
        }
        if chunk.len() >= batch || (done && !chunk.is_empty()) {
            let body = Value::Array(std::mem::take(&mut chunk));
            let out = client.post_root(&path, &body).await.with_context(|| {
                format!("sending labels (the {stored} before these were stored)")
            })?;
            stored += out["stored"].as_u64().unwrap_or(0);
            matched += out["matched"].as_u64().unwrap_or(0);
        }
        if done {
            break;
        }
    }
    anyhow::ensure!(stored > 0, "{} holds no labels", file.display());
    Ok((stored, matched))
}

pub(super) async fn datasets(
    client: &Client,
    cmd: DatasetsCommand,
    json_out: bool,
) -> anyhow::Result<()> {
    let DatasetsCommand::Read {
        function,
        since,
        labelled,
        limit,
    } = cmd;
    let since = humantime::format_duration(*since)
        .to_string()
        .replace(' ', "");
    let v = client
        .get(&format!(
            "datasets/{function}?since={since}&labelled={labelled}&limit={limit}"
        ))
        .await?;
    if json_out {
        println!("{v}");
        return Ok(());
    }
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        println!("no predictions of `{function}` in the last {since}");
        return Ok(());
    }
    // Columns in the first row's order; every row has the same ones.
    let columns: Vec<String> = rows[0]
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    println!("{}", columns.join("\t"));
    for row in &rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match &row[c] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        println!("{}", cells.join("\t"));
    }
    Ok(())
}
