//! `quiver batch`: score a large CSV file through a function or pipeline.
//!
//! The file is read as a stream and sent in chunks (JSON rows) to `/fn/...`, several
//! chunks in flight at once so the function scales out across instances; results
//! are written in input order. Memory is bounded by `concurrency` chunks.
//!
//! Nothing is dropped: a row the function refuses is written to the rejects file
//! with its 1-based row number and the reason. A chunk answered with 400 (invalid
//! input) is retried row by row, so one bad row does not take its neighbours with
//! it; overload (429/503) and transient failures are retried with backoff.
//!
//! Resumable: after every chunk written, `<output>.checkpoint` records how many
//! input rows are done and the sizes of the output and rejects files. A rerun of
//! the same command truncates both files to those sizes (dropping a partly written
//! chunk) and carries on from the next row.

use super::client::Client;
use super::features_load::typed;
use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct BatchJob {
    /// NAME or NAME@VERSION.
    pub function: String,
    #[arg(long)]
    pub input: PathBuf,
    #[arg(long)]
    pub output: PathBuf,
    /// Where refused rows go (default: OUTPUT.rejects.csv).
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// Rows per request.
    #[arg(long, default_value_t = 500)]
    pub chunk: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Stop after this many chunks, as if interrupted (to try resuming).
    #[arg(long = "stop-after-chunks", hide = true)]
    pub stop_after: Option<u64>,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Default, PartialEq)]
struct Checkpoint {
    input: String,
    function: String,
    rows_done: u64,
    output_bytes: u64,
    rejects_bytes: u64,
    scored: u64,
    rejected: u64,
}

/// What a chunk came back as.
struct Scored {
    /// (input row number, output row)
    rows: Vec<(u64, Map<String, Value>)>,
    /// (input row number, reason)
    rejected: Vec<(u64, String)>,
    /// Input rows in the chunk.
    size: u64,
}

pub struct Summary {
    pub scored: u64,
    pub rejected: u64,
    pub resumed_at: u64,
}

fn checkpoint_path(output: &Path) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push(".checkpoint");
    PathBuf::from(p)
}

fn save(path: &Path, cp: &Checkpoint) -> anyhow::Result<()> {
    let tmp = path.with_extension("checkpoint.tmp");
    std::fs::write(&tmp, serde_json::to_vec(cp)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Open for appending after truncating to `len` (0: start afresh).
fn reopen(path: &Path, len: u64) -> anyhow::Result<File> {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.set_len(len)?;
    f.seek(SeekFrom::Start(len))?;
    Ok(f)
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub async fn run(client: &Client, job: &BatchJob, progress: bool) -> anyhow::Result<Summary> {
    if job.chunk == 0 || job.concurrency == 0 {
        bail!("--chunk and --concurrency must be at least 1");
    }
    let cp_path = checkpoint_path(&job.output);
    let rejects_path = job.rejects.clone().unwrap_or_else(|| {
        let mut p = job.output.as_os_str().to_owned();
        p.push(".rejects.csv");
        PathBuf::from(p)
    });
    let mut cp = match std::fs::read(&cp_path) {
        Ok(bytes) => {
            let cp: Checkpoint = serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", cp_path.display()))?;
            if cp.input != job.input.display().to_string() || cp.function != job.function {
                bail!(
                    "{} belongs to another job ({} through {}); remove it to start afresh",
                    cp_path.display(),
                    cp.input,
                    cp.function
                );
            }
            cp
        }
        Err(_) => Checkpoint {
            input: job.input.display().to_string(),
            function: job.function.clone(),
            ..Checkpoint::default()
        },
    };
    let resumed_at = cp.rows_done;
    let mut out = reopen(&job.output, cp.output_bytes)?;
    let mut rejects = reopen(&rejects_path, cp.rejects_bytes)?;
    if cp.rejects_bytes == 0 {
        writeln!(rejects, "row,reason")?;
    }

    let size = std::fs::metadata(&job.input)
        .with_context(|| format!("reading {}", job.input.display()))?
        .len();
    let mut reader = csv::Reader::from_path(&job.input)
        .with_context(|| format!("opening {}", job.input.display()))?;
    let headers = reader.headers()?.clone();
    let pb = match progress {
        true => ProgressBar::new(size),
        false => ProgressBar::hidden(),
    };
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} ({elapsed}, eta {eta})")
    {
        pb.set_style(style);
    }

    // Chunks of (first row number, rows), read lazily: only chunks in flight are held.
    let mut records = reader.into_records();
    let mut skipped = 0;
    while skipped < cp.rows_done {
        match records.next() {
            Some(r) => {
                r?;
                skipped += 1;
            }
            None => break,
        }
    }
    let mut next_row = cp.rows_done + 1;
    let chunks = std::iter::from_fn(move || {
        let first = next_row;
        let mut rows = Vec::with_capacity(job.chunk);
        for r in records.by_ref().take(job.chunk) {
            let row = next_row;
            next_row += 1;
            rows.push(r.map_err(|e| (row, e.to_string())).map(|rec| {
                let obj: Map<String, Value> = headers
                    .iter()
                    .zip(rec.iter())
                    .filter_map(|(h, v)| typed(v).map(|v| (h.to_string(), v)))
                    .collect();
                (obj, rec.position().map_or(0, |p| p.byte()))
            }));
        }
        (!rows.is_empty()).then_some((first, rows))
    });
    let mut results = futures::stream::iter(chunks)
        .map(|(first, rows)| score_chunk(client, &job.function, first, rows))
        .buffered(job.concurrency);

    let mut columns: Option<Vec<String>> = None;
    let mut header_written = cp.output_bytes > 0;
    let mut chunks_done = 0u64;
    while let Some(result) = results.next().await {
        let (scored, byte) = result?;
        for (row, fields) in &scored.rows {
            let cols = columns.get_or_insert_with(|| fields.keys().cloned().collect());
            if !header_written {
                writeln!(out, "row,{}", cols.join(","))?;
                header_written = true;
            }
            let cells: Vec<String> = cols
                .iter()
                .map(|c| csv_escape(&cell(fields.get(c).unwrap_or(&Value::Null))))
                .collect();
            writeln!(out, "{row},{}", cells.join(","))?;
        }
        for (row, reason) in &scored.rejected {
            writeln!(rejects, "{row},{}", csv_escape(reason))?;
        }
        out.flush()?;
        rejects.flush()?;
        out.sync_data()?;
        rejects.sync_data()?;
        cp.rows_done += scored.size;
        cp.scored += scored.rows.len() as u64;
        cp.rejected += scored.rejected.len() as u64;
        cp.output_bytes = out.stream_position()?;
        cp.rejects_bytes = rejects.stream_position()?;
        save(&cp_path, &cp)?;
        pb.set_position(byte);
        pb.set_message(format!("{} scored, {} rejected", cp.scored, cp.rejected));
        chunks_done += 1;
        if job.stop_after == Some(chunks_done) {
            bail!(
                "stopped after {chunks_done} chunks as asked; rerun to resume at row {}",
                cp.rows_done + 1
            );
        }
    }
    pb.finish_and_clear();
    // Done: the checkpoint has nothing left to resume.
    std::fs::remove_file(&cp_path).ok();
    Ok(Summary {
        scored: cp.scored,
        rejected: cp.rejected,
        resumed_at,
    })
}

fn csv_escape(s: &str) -> String {
    match s.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", s.replace('"', "\"\"")),
        false => s.to_string(),
    }
}

type Row = Result<(Map<String, Value>, u64), (u64, String)>;

/// Score one chunk: the whole chunk at once; on invalid input, row by row.
async fn score_chunk(
    client: &Client,
    function: &str,
    first: u64,
    rows: Vec<Row>,
) -> anyhow::Result<(Scored, u64)> {
    let size = rows.len() as u64;
    let byte = rows
        .iter()
        .rev()
        .find_map(|r| r.as_ref().ok().map(|(_, b)| *b))
        .unwrap_or(0);
    let mut scored = Scored {
        rows: Vec::new(),
        rejected: Vec::new(),
        size,
    };
    let mut good: Vec<(u64, Map<String, Value>)> = Vec::new();
    for (i, r) in rows.into_iter().enumerate() {
        match r {
            Ok((obj, _)) => good.push((first + i as u64, obj)),
            Err((row, e)) => scored.rejected.push((row, format!("unreadable CSV: {e}"))),
        }
    }
    if good.is_empty() {
        return Ok((scored, byte));
    }
    match call(client, function, &good).await? {
        Ok(out) => collect(&good, out, &mut scored)?,
        Err(reason) if good.len() == 1 => scored.rejected.push((good[0].0, reason)),
        Err(_) => {
            // Find the bad rows; the others are scored.
            for one in &good {
                let single = std::slice::from_ref(one);
                match call(client, function, single).await? {
                    Ok(out) => collect(single, out, &mut scored)?,
                    Err(reason) => scored.rejected.push((one.0, reason)),
                }
            }
        }
    }
    scored.rows.sort_by_key(|(row, _)| *row);
    scored.rejected.sort_by_key(|(row, _)| *row);
    Ok((scored, byte))
}

/// Output rows belong to the input rows the function did not reject, in order.
fn collect(
    sent: &[(u64, Map<String, Value>)],
    out: Value,
    scored: &mut Scored,
) -> anyhow::Result<()> {
    let mut refused = std::collections::BTreeSet::new();
    for r in out["rejected"].as_array().into_iter().flatten() {
        let at = r["row"].as_u64().unwrap_or(0) as usize;
        if let Some((row, _)) = sent.get(at.wrapping_sub(1)) {
            refused.insert(*row);
            let reason = r["reason"].as_str().unwrap_or("rejected").to_string();
            scored.rejected.push((*row, reason));
        }
    }
    let kept: Vec<u64> = sent
        .iter()
        .map(|(row, _)| *row)
        .filter(|row| !refused.contains(row))
        .collect();
    let rows = out["rows"].as_array().cloned().unwrap_or_default();
    if rows.len() != kept.len() {
        bail!(
            "the function returned {} rows for {} input rows; batch scoring needs one output row per input row",
            rows.len(),
            kept.len()
        );
    }
    for (row, v) in kept.into_iter().zip(rows) {
        let Value::Object(fields) = v else {
            bail!("the function returned a row that is not an object");
        };
        scored.rows.push((row, fields));
    }
    Ok(())
}

/// One call: `Ok(Ok(result))`, `Ok(Err(reason))` when the function refuses the
/// input (400), `Err` when it keeps failing otherwise (the job stops, resumable).
async fn call(
    client: &Client,
    function: &str,
    rows: &[(u64, Map<String, Value>)],
) -> anyhow::Result<Result<Value, String>> {
    let body: Vec<&Map<String, Value>> = rows.iter().map(|(_, o)| o).collect();
    let body = serde_json::to_vec(&body)?;
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=6 {
        let (status, retry_after, out) = client
            .invoke_status(function, "application/json", body.clone())
            .await?;
        if status.is_success() {
            return Ok(Ok(out));
        }
        let reason = out["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| out.to_string());
        match status.as_u16() {
            400 | 422 => return Ok(Err(reason)),
            429 | 500..=599 if attempt < 6 => {
                tokio::time::sleep(retry_after.unwrap_or(wait)).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            _ => bail!("{function}: {status}: {reason}"),
        }
    }
    bail!("{function}: still failing after retries")
}
