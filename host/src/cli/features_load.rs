//! `quiver features load`: stream a CSV file into a feature group in batches, with
//! a progress bar; memory stays bounded by one batch whatever the file size.

use super::client::Client;
use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Duration;

/// A CSV cell as a typed feature value (`None`: empty, skipped).
pub(super) fn typed(cell: &str) -> Option<Value> {
    let cell = cell.trim();
    if cell.is_empty() {
        return None;
    }
    if let Ok(i) = cell.parse::<i64>() {
        return Some(json!(i));
    }
    if let Ok(f) = cell.parse::<f64>() {
        if f.is_finite() {
            return Some(json!(f));
        }
    }
    match cell {
        "true" => Some(json!(true)),
        "false" => Some(json!(false)),
        _ => Some(json!(cell)),
    }
}

pub async fn load(
    client: &Client,
    group: &str,
    file: &Path,
    entity_column: &str,
    ttl: Option<Duration>,
    batch: usize,
    progress: bool,
) -> anyhow::Result<u64> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let mut reader =
        csv::Reader::from_path(file).with_context(|| format!("opening {}", file.display()))?;
    let headers = reader.headers()?.clone();
    let entity_at = headers
        .iter()
        .position(|h| h == entity_column)
        .with_context(|| {
            format!(
                "{} has no `{entity_column}` column (use --entity-column)",
                file.display()
            )
        })?;
    let pb = match progress {
        true => ProgressBar::new(size),
        false => ProgressBar::hidden(),
    };
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} {elapsed}")
    {
        pb.set_style(style);
    }
    let ttl_ms = ttl.map(|t| t.as_millis() as u64);
    let mut rows = Vec::with_capacity(batch);
    let mut written = 0u64;
    let path = format!("features/{group}");
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: row {}", file.display(), i + 2))?;
        let entity = record.get(entity_at).unwrap_or_default().to_string();
        let mut values = Map::new();
        for (h, cell) in headers.iter().zip(record.iter()) {
            if h != entity_column {
                if let Some(v) = typed(cell) {
                    values.insert(h.to_string(), v);
                }
            }
        }
        rows.push(json!({ "entity": entity, "values": values }));
        if rows.len() == batch {
            written += send(client, &path, ttl_ms, &mut rows).await?;
            pb.set_position(record.position().map_or(0, |p| p.byte()));
            pb.set_message(format!("{written} entities"));
        }
    }
    written += send(client, &path, ttl_ms, &mut rows).await?;
    pb.finish_and_clear();
    Ok(written)
}

async fn send(
    client: &Client,
    path: &str,
    ttl_ms: Option<u64>,
    rows: &mut Vec<Value>,
) -> anyhow::Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let body = json!({ "ttl_ms": ttl_ms, "rows": std::mem::take(rows) });
    let out = client.post_json(path, &body).await?;
    Ok(out["written"].as_u64().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::typed;
    use serde_json::json;

    #[test]
    fn cells_are_typed() {
        assert_eq!(typed("3"), Some(json!(3)));
        assert_eq!(typed("2.5"), Some(json!(2.5)));
        assert_eq!(typed("true"), Some(json!(true)));
        assert_eq!(typed(" x "), Some(json!("x")));
        assert_eq!(typed(""), None);
        assert_eq!(typed("NaN"), Some(json!("NaN")));
    }
}
