//! Issue 4, batch scoring: `quiver batch` streams a file through a function or a
//! pipeline in chunks, writes refused rows with reasons, and resumes.
use quiver_tests::{fraud_reference, Server};
use serde_json::Value;
use std::fmt::Write as _;

fn setup() -> (Server, Vec<Vec<f64>>, Vec<f64>) {
    let server = Server::start();
    server.deploy_fraud_score();
    let (rows, want) = fraud_reference();
    (server, rows, want)
}

/// `n` rows cycling through the reference rows; row 7 has a text amount and row 500
/// lacks hour_of_day.
fn features_csv(rows: &[Vec<f64>], n: usize) -> String {
    let mut csv = String::from("txn_id,log_amount,hour_of_day,merchant_z,merchant_known\n");
    for i in 1..=n {
        let x = &rows[(i - 1) % rows.len()];
        let known = x[3] == 1.0;
        match i {
            7 => writeln!(csv, "b-{i},abc,{},{},{known}", x[1] as i64, x[2]),
            500 => writeln!(csv, "b-{i},{},,{},{known}", x[0], x[2]),
            _ => writeln!(csv, "b-{i},{},{},{},{known}", x[0], x[1] as i64, x[2]),
        }
        .unwrap();
    }
    csv
}

fn read_csv(path: &std::path::Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.splitn(2, ',').map(str::to_string).collect())
        .collect()
}

#[test]
fn batch_scores_a_file_and_keeps_every_refused_row() {
    let (server, rows, want) = setup();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, features_csv(&rows, 1200)).unwrap();
    let output = dir.path().join("scores.csv");
    let out = server.cli_ok(&[
        "batch",
        "fraud-score",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--chunk",
        "100",
        "--concurrency",
        "3",
        "--json",
    ]);
    let summary: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["scored"], 1198, "{summary}");
    assert_eq!(summary["rejected"], 2, "{summary}");

    let text = std::fs::read_to_string(&output).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("row,txn_id,score,label"));
    let body: Vec<&str> = lines.collect();
    assert_eq!(body.len(), 1198);
    // In input order, with the input row number; the scores are the model's.
    let first: Vec<&str> = body[0].split(',').collect();
    assert_eq!(first[..2], ["1", "b-1"]);
    assert!(
        (first[2].parse::<f64>().unwrap() - want[0]).abs() < 1e-5,
        "{}",
        body[0]
    );
    let numbers: Vec<u64> = body
        .iter()
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]));
    assert!(!numbers.contains(&7) && !numbers.contains(&500));
    for (line, n) in body.iter().zip(&numbers) {
        let score: f64 = line.split(',').nth(2).unwrap().parse().unwrap();
        let p = want[(*n as usize - 1) % want.len()];
        assert!((score - p).abs() < 1e-5, "row {n}: {score} vs {p}");
    }

    let rejects = read_csv(&dir.path().join("scores.csv.rejects.csv"));
    assert_eq!(rejects[0], ["row", "reason"]);
    assert_eq!(rejects.len(), 3, "{rejects:?}");
    assert_eq!(rejects[1][0], "7");
    assert!(rejects[1][1].contains("log_amount"), "{rejects:?}");
    assert_eq!(rejects[2][0], "500");
    assert!(rejects[2][1].contains("hour_of_day"), "{rejects:?}");
    // Finished: no checkpoint left behind.
    assert!(!dir.path().join("scores.csv.checkpoint").exists());
}

#[test]
fn an_interrupted_batch_resumes_where_it_stopped() {
    let (server, rows, _) = setup();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, features_csv(&rows, 950)).unwrap();
    let run = |output: &str, extra: &[&str]| {
        let out = dir.path().join(output);
        let mut args = vec![
            "batch".to_string(),
            "fraud-score".into(),
            "--input".into(),
            input.display().to_string(),
            "--output".into(),
            out.display().to_string(),
            "--chunk".into(),
            "100".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        server.cli(&args)
    };
    let stopped = run("resumed.csv", &["--stop-after-chunks", "3"]);
    assert!(!stopped.status.success());
    let err = String::from_utf8_lossy(&stopped.stderr);
    assert!(err.contains("resume at row 301"), "{err}");
    let cp: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("resumed.csv.checkpoint")).unwrap(),
    )
    .unwrap();
    assert_eq!(cp["rows_done"], 300);
    // Simulate a crash mid-write: garbage after the checkpointed length is dropped.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("resumed.csv"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"301,half-written").unwrap();

    let resumed = run("resumed.csv", &[]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let said = String::from_utf8_lossy(&resumed.stdout);
    assert!(said.contains("resumed at row 301"), "{said}");
    // Identical to a run that was never interrupted.
    assert!(run("straight.csv", &[]).status.success());
    let a = std::fs::read_to_string(dir.path().join("resumed.csv")).unwrap();
    let b = std::fs::read_to_string(dir.path().join("straight.csv")).unwrap();
    assert_eq!(a.lines().count(), 949);
    assert_eq!(a, b);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("resumed.csv.rejects.csv")).unwrap(),
        std::fs::read_to_string(dir.path().join("straight.csv.rejects.csv")).unwrap()
    );
}

#[test]
fn batch_through_a_pipeline_reports_ingest_rejects_by_row() {
    let (server, _, _) = setup();
    server.deploy("ingest-json");
    server.deploy("txn-features");
    server.deploy("fraud-pipeline");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("txns.csv");
    let mut csv = String::from("txn_id,amount,ts,merchant\n");
    for i in 1..=250 {
        let amount = match i {
            120 => "lots".to_string(),
            _ => format!("{}.5", i % 90),
        };
        writeln!(csv, "p-{i},{amount},{},coffee-corner", 1763812800 + i * 60).unwrap();
    }
    std::fs::write(&input, csv).unwrap();
    let output = dir.path().join("out.csv");
    server.cli_ok(&[
        "batch",
        "fraud-pipeline",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--chunk",
        "50",
    ]);
    let out = read_csv(&output);
    assert_eq!(out.len(), 250, "header + 249 rows");
    assert!(out[0][1].starts_with("txn_id,score,label"), "{:?}", out[0]);
    // Row numbers line up with txn ids around the refused row.
    assert!(out
        .iter()
        .any(|r| r[0] == "119" && r[1].starts_with("p-119,")));
    assert!(out
        .iter()
        .any(|r| r[0] == "121" && r[1].starts_with("p-121,")));
    let rejects = read_csv(&dir.path().join("out.csv.rejects.csv"));
    assert_eq!(rejects.len(), 2, "{rejects:?}");
    assert_eq!(rejects[1][0], "120");
    assert!(rejects[1][1].contains("amount"), "{rejects:?}");
}
