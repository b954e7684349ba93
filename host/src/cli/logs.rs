//! `quiver logs NAME [--follow]`: a function's captured output and log lines.

use super::client::Client;
use serde_json::Value;
use std::time::Duration;

fn print(line: &Value, json_out: bool) {
    if json_out {
        println!("{line}");
        return;
    }
    let at = chrono::DateTime::from_timestamp_millis(line["time_ms"].as_i64().unwrap_or(0))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    let trace: String = line["trace_id"]
        .as_str()
        .unwrap_or("")
        .chars()
        .take(8)
        .collect();
    println!(
        "{at} {} {} {trace} {}",
        line["version"].as_str().unwrap_or(""),
        line["stream"].as_str().unwrap_or(""),
        line["text"].as_str().unwrap_or("")
    );
}

/// The newest `limit` lines; with `follow`, then every new one as it comes (Ctrl-C ends).
pub(super) async fn logs(
    client: &Client,
    name: &str,
    limit: usize,
    follow: bool,
    json_out: bool,
) -> anyhow::Result<()> {
    let mut after = 0u64;
    let mut limit = limit;
    loop {
        let v = client
            .get(&format!(
                "functions/{name}/logs?after={after}&limit={limit}"
            ))
            .await?;
        for line in v["lines"].as_array().into_iter().flatten() {
            print(line, json_out);
        }
        after = v["next"].as_u64().unwrap_or(after);
        if !follow {
            return Ok(());
        }
        limit = crate::logs::MAX_READ;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
