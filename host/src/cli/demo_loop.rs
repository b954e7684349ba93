//! The ML loop of `quiver demo`, on the host the demo started: labelled traffic →
//! a training run inside Wasm (gated, registered with lineage) → the new version
//! is rolled out (shadow → 10 % → 50 % → 100 %, each step judged by the host's
//! analysis) and promoted → drift injected → the drift monitor publishes
//! `drift.detected` → the trainer retrains by itself and the new version is rolled
//! out and promoted the same way; and a deliberately bad trainer the gate stops.
//! Every line it prints is read back from the host (the run's answer, the
//! registry, the monitor's report), not assumed.

use super::client::Client;
use super::Overrides;
use anyhow::Context as _;
use serde_json::{json, Value};
use std::path::Path;

use std::time::{Duration, Instant};

const MERCHANTS: [&str; 3] = ["coffee-corner", "electro-mart", "bakery-42"];

/// Transaction `i` of a fixed stream, amounts times `scale`, and whether it is
/// fraud (large, or at night and not small): labels the features can learn.
fn txn(i: u64, scale: f64) -> (Value, bool) {
    let mut z = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
    let amount = ((u * 7.5).exp() * scale).round();
    let hour = (z % 24) as i64;
    let fraud = amount > 900.0 || (hour < 5 && amount > 150.0);
    let row = json!({
        "txn_id": format!("t-{i}"),
        "amount": amount,
        "ts": 1_763_812_800 + hour * 3600 + (i as i64 % 60) * 60,
        "merchant": MERCHANTS[(z >> 8) as usize % 3],
    });
    (row, fraud)
}

/// Score `calls` batches of 50 transactions from `first` and label every row
/// (as a labelling service would, later, by request id).
async fn traffic(client: &Client, first: u64, calls: u64, scale: f64) -> anyhow::Result<()> {
    let mut labels = Vec::new();
    for c in 0..calls {
        let (rows, truth): (Vec<Value>, Vec<bool>) = (first + c * 50..first + (c + 1) * 50)
            .map(|i| txn(i, scale))
            .unzip();
        let body = Value::Array(rows).to_string().into_bytes();
        let (_, id, _) = client
            .invoke_with_id("fraud-pipeline", "application/json", body)
            .await?;
        for (row, t) in truth.iter().enumerate() {
            labels.push(json!({"request_id": id, "row": row, "label": t}));
        }
    }
    let path = format!("fn/{}/fraud-pipeline/feedback", client.tenant());
    client.post_root(&path, &Value::Array(labels)).await?;
    Ok(())
}

async fn deploy(
    client: &Client,
    functions: &Path,
    f: &str,
    sets: &[&str],
) -> anyhow::Result<Value> {
    let o = Overrides {
        sets: sets.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    super::deploy(client, &functions.join(f), &o, false)
        .await
        .with_context(|| format!("deploying {f}"))
}

fn gate_line(out: &Value) -> String {
    let g = &out["gate"];
    format!(
        "{}@{}: {} → {}",
        out["model"].as_str().unwrap_or("?"),
        out["version"].as_str().unwrap_or("?"),
        g["decision"].as_str().unwrap_or("?"),
        match out["promoted_to"].as_str() {
            Some(a) => format!("`{a}` moved to it"),
            None => "no alias moved".into(),
        }
    )
}

/// The newest model version, and its record.
async fn newest(client: &Client) -> anyhow::Result<Value> {
    let v = client.get("models/fraud-model/versions").await?;
    let newest = v["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .max_by_key(|m| semver::Version::parse(m["version"].as_str().unwrap_or("")).ok())
        .cloned();
    newest.context("fraud-model has no versions")
}

/// Run the loop in a tenant of its own (`loop-<unix seconds>`: a rerun on the
/// same data dir starts afresh, next to the earlier runs); `say` prints a line.
pub async fn run(
    base: &str,
    token: &str,
    functions: &Path,
    model_bytes: Vec<u8>,
    say: &dyn Fn(&str),
) -> anyhow::Result<Value> {
    let started = Instant::now();
    let tenant = format!("loop-{}", crate::unix_ms() / 1000);
    let admin = Client::new(base, "default", Some(token))?;
    admin
        .admin_call(
            reqwest::Method::POST,
            "tenants",
            Some(&json!({ "name": tenant })),
        )
        .await
        .with_context(|| format!("creating tenant {tenant}"))?;
    let client = &Client::new(base, &tenant, Some(token))?;
    say(&format!(
        "\n▶ the ML loop, in tenant `{tenant}`: log and label predictions, retrain inside Wasm, gate, promote, detect drift, retrain by itself"
    ));
    client
        .push_model(
            &json!({"name": "fraud-model", "version": "1.0.0"}),
            model_bytes,
        )
        .await?;
    client
        .put_json(
            "models/fraud-model/aliases/champion",
            &json!({"version": "1.0.0", "reason": "demo: the first model"}),
        )
        .await?;
    deploy(client, functions, "ingest-json", &[]).await?;
    // Features from the trained merchant stats only, so serving and training
    // compute the same values (see the README's "Retraining").
    deploy(
        client,
        functions,
        "txn-features",
        &["config.online_stats=false"],
    )
    .await?;
    deploy(
        client,
        functions,
        "fraud-score",
        &["models.fraud=fraud-model@champion"],
    )
    .await?;
    deploy(
        client,
        functions,
        "drift-monitor",
        &[
            "config.dataset=fraud-pipeline",
            r#"datasets.read=["fraud-pipeline"]"#,
            "config.window_rows=600",
            // A full window of one version's rows before it is judged: during a
            // rollout the candidate has only a few (noise, not drift).
            "config.min_rows=600",
        ],
    )
    .await?;
    deploy(
        client,
        functions,
        "fraud-pipeline",
        &["datasets.log=true", r#"pipeline.monitor="drift-monitor""#],
    )
    .await?;
    // The demo's rollouts: steps of one second, five calls per arm, a strict α,
    // and a large shift allowed: the first model (1.0.0) was not trained on this
    // traffic, so a model that is rightly much better moves its scores a lot (a
    // KS D near 0.5 measured here); a broken one (constant, inverted) is near 1.
    let rollout_sets = [
        "trainer.rollout.interval=\"1s\"",
        "trainer.rollout.min_calls=5",
        "trainer.rollout.deadline=\"60s\"",
        "trainer.rollout.alpha=0.001",
        "trainer.rollout.min_shift=0.7",
    ];
    deploy(client, functions, "retrain-fraud", &rollout_sets).await?;
    say("  deployed ingest-json → txn-features → fraud-score (fraud-model@champion = 1.0.0), logged, tapped by drift-monitor; retrain-fraud on drift.detected");
    say("  rollouts of what passes the gate: shadow → 10% → 50% → 100%, each step 1 s and ≥ 5 calls per arm; fails on 5xx > 1%, p99 > 2× champion + 10 ms, or scores shifted (KS p < 0.001 and D ≥ 0.7)");
    traffic(client, 0, 16, 1.0).await?;
    say("  800 transactions scored and labelled");
    // The logged rows land off the request path: wait until the window has them.
    let since = "datasets/fraud-pipeline?since=1h&labelled=true&limit=100000";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = client.get(since).await?;
        if w["rows"].as_array().map_or(0, Vec::len) >= 800 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the labelled window never reached 800 rows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = client
        .post_root(
            &format!("fn/{tenant}/retrain-fraud"),
            &json!({"reason": "demo: first retrain"}),
        )
        .await?;
    say(&format!("▶ trained  {}", gate_line(&first)));
    let version = first["version"]
        .as_str()
        .context("the run named no version")?
        .to_string();
    let model = newest(client).await?;
    let l = &model["lineage"];
    say(&format!(
        "  lineage: dataset {} ({} rows, {} held out), trainer {}, features {}, parent {}",
        l["dataset"]["digest"].as_str().unwrap_or("?"),
        l["dataset"]["rows"],
        l["dataset"]["holdout_rows"],
        l["trainer"].as_str().unwrap_or("?"),
        l["features"].as_str().unwrap_or("?"),
        l["parent"].as_str().unwrap_or("-"),
    ));
    anyhow::ensure!(
        first["gate"]["passed"] == true,
        "the first retrain did not pass its gate: {first}"
    );
    let (rolled, next) = drive_rollout(client, 800, 1.0, say).await?;
    anyhow::ensure!(
        rolled["state"] == "promoted" && rolled["candidate"] == version.as_str(),
        "the first version was not promoted: {rolled}"
    );

    traffic(client, next, 12, 1.0).await?;
    let calm = wait_report(client, &version).await?;
    say(&format!(
        "▶ normal traffic: drift-monitor over the newest {} rows of fraud-model@{version}: PSI amount {:.4}, KS p {:.3}, JS merchant {:.4}, PSI score {:.4}",
        calm["window.model_rows"]["last"].as_f64().unwrap_or_default(),
        calm["in.amount.psi"]["last"].as_f64().unwrap_or(f64::NAN),
        calm["in.amount.ks_p"]["last"].as_f64().unwrap_or(f64::NAN),
        calm["in.merchant.js"]["last"].as_f64().unwrap_or(f64::NAN),
        calm["out.score.psi"]["last"].as_f64().unwrap_or(f64::NAN),
    ));

    say("▶ injecting drift: amounts 20 times larger");
    let injected = Instant::now();
    let next = next + 12 * 50;
    traffic(client, next, 6, 20.0).await?;
    let next = next + 6 * 50;
    let deadline = Instant::now() + Duration::from_secs(60);
    let retrained = loop {
        let m = newest(client).await?;
        if m["lineage"]["parent"] == version.as_str()
            && m["lineage"]["reason"]["monitor"] == "drift-monitor"
        {
            break m;
        }
        anyhow::ensure!(Instant::now() < deadline, "no retrain followed the drift");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let why = &retrained["lineage"]["reason"];
    say(&format!(
        "  drift.detected: {} {} {:.4} (threshold {}) over {} rows of {}",
        why["feature"].as_str().unwrap_or("?"),
        why["statistic"].as_str().unwrap_or("?"),
        why["value"].as_f64().unwrap_or(f64::NAN),
        why["threshold"],
        why["window"]["rows"],
        why["model_version"].as_str().unwrap_or("?"),
    ));
    let g = &retrained["lineage"]["gate"];
    say(&format!(
        "▶ retrained by the event: fraud-model@{} (parent {}): {}",
        retrained["version"].as_str().unwrap_or("?"),
        version,
        g["decision"].as_str().unwrap_or("?")
    ));

    let new_version = retrained["version"].as_str().unwrap_or("?").to_string();
    let (rolled, _) = drive_rollout(client, next, 20.0, say).await?;
    let to_full = injected.elapsed();
    anyhow::ensure!(
        rolled["state"] == "promoted" && rolled["candidate"] == new_version.as_str(),
        "the retrained version was not promoted: {rolled}"
    );
    say(&format!(
        "  drift injected → fraud-model@{new_version} serving 100 % as champion: {:.1} s",
        to_full.as_secs_f64()
    ));

    // A trainer that learns the wrong thing: the gate refuses it.
    let bad = Overrides {
        name: Some("retrain-bad".into()),
        sets: vec!["config.flip_labels=true".into()],
        ..Default::default()
    };
    super::deploy(client, &functions.join("retrain-fraud"), &bad, false).await?;
    let bad = client
        .post_root(
            &format!("fn/{tenant}/retrain-bad"),
            &json!({"reason": "demo: a bad trainer"}),
        )
        .await?;
    say(&format!(
        "▶ a deliberately bad trainer (labels flipped): {}",
        gate_line(&bad)
    ));
    anyhow::ensure!(
        bad["gate"]["passed"] == false,
        "the gate let a bad model through: {bad}"
    );
    let history = client.get("models/fraud-model/aliases").await?;
    say(&format!(
        "  champion stays fraud-model@{}; `quiver models history fraud-model` lists every move ({} so far)",
        history["aliases"]["champion"].as_str().unwrap_or("?"),
        history["history"].as_array().map_or(0, Vec::len)
    ));
    say(&format!(
        "  the loop took {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(
        json!({ "first": first, "retrained": retrained, "bad": bad, "calm": calm,
               "drift_to_promoted_s": to_full.as_secs_f64() }),
    )
}

/// Score traffic (labelled, in calls of 50) while the newest rollout of
/// fraud-model runs, printing each judged step; the rollout once it ended, and the
/// next transaction number.
async fn drive_rollout(
    client: &Client,
    mut next: u64,
    scale: f64,
    say: &dyn Fn(&str),
) -> anyhow::Result<(Value, u64)> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut shown = 0;
    loop {
        traffic(client, next, 4, scale).await?;
        next += 4 * 50;
        let all = client.get("models/fraud-model/rollouts").await?;
        let r = all["rollouts"][0].clone();
        let history = r["history"].as_array().cloned().unwrap_or_default();
        for h in history.iter().skip(shown) {
            let m = &h["detail"]["measured"];
            let label = r["spec"]["steps"]
                .get(h["step"].as_u64().unwrap_or(0) as usize)
                .map(|s| match s {
                    Value::String(s) => s.clone(),
                    other => format!("{other}%"),
                })
                .unwrap_or_else(|| "?".into());
            say(&format!(
                "  rollout {} of fraud-model@{}: step {label:<6} {:<11} candidate {} calls, {} errors, p99 {} ms (champion {} ms), score KS p {}",
                r["id"],
                r["candidate"].as_str().unwrap_or("?"),
                h["outcome"].as_str().unwrap_or("?"),
                m["candidate"]["calls"],
                m["candidate"]["errors"],
                fmt_ms(&m["candidate"]["p99_ms"]),
                fmt_ms(&m["champion"]["p99_ms"]),
                m["score"]["ks_p"]
                    .as_f64()
                    .map_or_else(|| "-".into(), |p| format!("{p:.3}")),
            ));
        }
        shown = history.len();
        if r["state"] != "running" {
            say(&format!(
                "▶ rollout {}: {} — {}",
                r["id"],
                r["state"].as_str().unwrap_or("?"),
                r["reason"].as_str().unwrap_or("?")
            ));
            return Ok((r, next));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the rollout did not end in 90 s: {r}"
        );
    }
}

fn fmt_ms(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| format!("{x:.1}"))
}

/// The monitor's latest metrics once it has judged a full window of `version`.
async fn wait_report(client: &Client, version: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client.get("monitors/drift-monitor/reports").await?;
        // Newest window first.
        if let Some(w) = r["windows"].as_array().and_then(|w| w.first()) {
            let m = &w["metrics"];
            if m["window.model_rows"]["last"].as_f64().unwrap_or(0.0) >= 600.0
                && m["in.amount.psi"]["last"].is_number()
            {
                return Ok(m.clone());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "drift-monitor never reported a full window of fraud-model@{version}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
