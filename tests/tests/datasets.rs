//! Labelled feedback: a function with `[datasets] log` logs each call's predictions
//! (inputs, outputs, its version and its models' versions) under the request id it
//! answered with (`x-quiver-request-id`); labels arrive later (`POST
//! /fn/{tenant}/{name}/feedback`, `quiver feedback load file.csv`) and join them;
//! `quiver datasets read` and a monitor's `quiver:ml/datasets.read` read the window.

use quiver_tests::{error_of, txns, Server};
use serde_json::{json, Value};

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn labels_join_the_predictions_they_belong_to_and_a_monitor_reads_them() {
    let server = Server::start();
    server.deploy_fraud_score();
    server.deploy("ingest-json");
    server.deploy("txn-features");
    server.deploy_with("fraud-pipeline", &["--set", "datasets.log=true"]);

    // Three calls of two rows; each answers its request id.
    let mut predicted: Vec<(String, usize, bool)> = Vec::new();
    let mut ids = Vec::new();
    for amounts in [[12.0, 9000.0], [40.0, 15000.0], [75.0, 20.0]] {
        let r = server.post(
            "/fn/default/fraud-pipeline",
            "application/json",
            txns(&amounts),
        );
        assert_eq!(r.status(), 200);
        let id = r.headers()["x-quiver-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(id.len(), 16, "a W3C span id: {id}");
        let body: Value = r.json().unwrap();
        for (row, out) in body["rows"].as_array().unwrap().iter().enumerate() {
            predicted.push((id.clone(), row, out["label"].as_bool().unwrap()));
        }
        ids.push(id);
    }
    assert_eq!(ids.len(), 3);
    assert!(ids[0] != ids[1] && ids[1] != ids[2], "{ids:?}");
    server.wait_metric(
        "quiver_dataset_logged_rows_total{function=\"fraud-pipeline\",tenant=\"default\"}",
        6.0,
        30,
    );

    // Labels: four agree with the prediction, two do not, one names no prediction.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("labels.csv");
    let mut text = String::from("request_id,row,label\n");
    for (i, (id, row, p)) in predicted.iter().enumerate() {
        let truth = if i < 2 { !p } else { *p };
        text.push_str(&format!("{id},{row},{truth}\n"));
    }
    text.push_str("0000000000000000,0,true\n");
    std::fs::write(&csv, text).unwrap();
    let out = json_of(&server.cli_ok(&[
        "--json",
        "feedback",
        "load",
        csv.to_str().unwrap(),
        "--function",
        "fraud-pipeline",
        "--batch",
        "3",
    ]));
    assert_eq!(
        (out["stored"].clone(), out["matched"].clone()),
        (json!(7), json!(6)),
        "{out}"
    );

    // The labelled window, as a trainer reads it.
    let v = json_of(&server.cli_ok(&[
        "--json",
        "datasets",
        "read",
        "fraud-pipeline",
        "--labelled",
        "--since",
        "1h",
    ]));
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "{v}");
    for r in rows {
        let (id, row) = (
            r["request_id"].as_str().unwrap(),
            r["row"].as_u64().unwrap(),
        );
        let (_, _, p) = predicted
            .iter()
            .find(|(i, w, _)| i == id && *w as u64 == row)
            .unwrap_or_else(|| panic!("a row no call answered: {r}"));
        assert_eq!(r["out.label"], json!(p), "{r}");
        assert!(r["out.score"].is_number(), "{r}");
        assert!(r["in.amount"].is_number(), "{r}");
        assert!(r["label"].is_boolean(), "{r}");
        assert_eq!(r["version"], "fraud-pipeline@2.2.0", "{r}");
        assert_eq!(r["models"], "fraud-model@1.0.0", "{r}");
    }
    let amounts: Vec<f64> = rows
        .iter()
        .map(|r| r["in.amount"].as_f64().unwrap())
        .collect();
    assert_eq!(amounts, [12.0, 9000.0, 40.0, 15000.0, 75.0, 20.0]);
    let table = server.cli_ok(&["datasets", "read", "fraud-pipeline", "--labelled"]);
    assert!(table.starts_with("request_id\trow\t"), "{table}");
    assert_eq!(table.lines().count(), 7, "{table}");

    // A call nobody labelled yet is in the window, not in the labelled one.
    let r = server.post(
        "/fn/default/fraud-pipeline",
        "application/json",
        txns(&[5.0]),
    );
    assert_eq!(r.status(), 200);
    server.wait_metric(
        "quiver_dataset_logged_rows_total{function=\"fraud-pipeline\",tenant=\"default\"}",
        7.0,
        30,
    );
    let v = json_of(&server.cli_ok(&["--json", "datasets", "read", "fraud-pipeline"]));
    let labelled: Vec<bool> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["labelled"].as_bool().unwrap())
        .collect();
    assert_eq!(labelled, [true, true, true, true, true, true, false], "{v}");

    // A monitor reads the labelled rows through quiver:ml/datasets: 4 of 6 agree.
    server.deploy("label-monitor");
    let r = server.post(
        "/fn/default/label-monitor",
        "application/json",
        json!({"inputs": [{"x": 1}], "outputs": [{"y": 1}]}).to_string(),
    );
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["report"]["metrics"]["labelled_rows"], 6.0, "{v}");
    let accuracy = v["report"]["metrics"]["accuracy"].as_f64().unwrap();
    assert!((accuracy - 4.0 / 6.0).abs() < 1e-12, "{v}");
    let alerts = v["report"]["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 1, "below min_accuracy 0.8: {v}");
    // A later label for the same row replaces the earlier: now 5 of 6 agree.
    let (id, row, p) = &predicted[0];
    let fix = json!([{"request_id": id, "row": row, "label": p}]);
    let r = server.post(
        "/fn/default/fraud-pipeline/feedback",
        "application/json",
        fix.to_string(),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["matched"], 1);
    let r = server.post(
        "/fn/default/label-monitor",
        "application/json",
        json!({"inputs": [{"x": 1}], "outputs": [{"y": 1}]}).to_string(),
    );
    let v: Value = r.json().unwrap();
    let accuracy = v["report"]["metrics"]["accuracy"].as_f64().unwrap();
    assert!((accuracy - 5.0 / 6.0).abs() < 1e-12, "{v}");
    assert_eq!(v["report"]["alerts"], json!([]), "{v}");

    // A monitor reads only the datasets its manifest names.
    server.deploy_with(
        "label-monitor",
        &[
            "--name",
            "nosy-monitor",
            "--set",
            "config.function=txn-features",
        ],
    );
    let (status, code, msg) = error_of(server.post(
        "/fn/default/nosy-monitor",
        "application/json",
        json!({"inputs": [{"x": 1}], "outputs": [{"y": 1}]}).to_string(),
    ));
    assert_eq!((status, code.as_str()), (400, "invalid_input"), "{msg}");
    assert!(
        msg.contains("may not read the dataset of `txn-features`"),
        "{msg}"
    );
    server.assert_healthy();
}

#[test]
fn bad_feedback_gets_a_clear_error_and_stores_nothing() {
    let server = Server::start();
    server.deploy_with("ingest-json", &["--set", "datasets.log=true"]);
    server.deploy_with("ingest-json", &["--name", "unlogged"]);
    let path = "/fn/default/ingest-json/feedback";
    let many: Vec<Value> = (0..10_001)
        .map(|i| json!({"request_id": format!("r{i}"), "label": 1}))
        .collect();
    let many = Value::Array(many).to_string();
    for (body, status, code, what) in [
        ("[1", 400, "invalid_json", "not JSON"),
        ("{}", 400, "invalid_feedback", "send an array"),
        ("[]", 400, "invalid_feedback", "no labels"),
        (
            r#"{"labels": 3}"#,
            400,
            "invalid_feedback",
            "must be an array",
        ),
        (
            r#"[{"request_id": "a", "label": 1}, {"request_id": "a b", "label": 1}]"#,
            400,
            "invalid_label",
            "label 2: `request_id`",
        ),
        (
            r#"[{"request_id": "a", "label": [1]}]"#,
            400,
            "invalid_label",
            "`label` must be",
        ),
        (
            r#"[{"request_id": "a", "row": -1, "label": 1}]"#,
            400,
            "invalid_label",
            "`row`",
        ),
        (
            r#"[{"request_id": "a"}]"#,
            400,
            "invalid_label",
            "`label` is missing",
        ),
        (many.as_str(), 400, "too_many_labels", "at most 10000"),
    ] {
        let (s, c, m) = error_of(server.post(path, "application/json", body.to_string()));
        assert_eq!((s, c.as_str()), (status, code), "{body:.80}: {m}");
        assert!(m.contains(what), "{body:.80}: {m}");
    }
    // Nothing of the refused requests was stored.
    let v = json_of(&server.cli_ok(&["--json", "datasets", "read", "ingest-json", "--labelled"]));
    assert_eq!(v["rows"], json!([]), "{v}");

    let one = r#"[{"request_id": "a", "label": 1}]"#;
    let (s, c, _) = error_of(server.post("/fn/default/unlogged/feedback", "application/json", one));
    assert_eq!((s, c.as_str()), (400, "not_logged"));
    let (s, _, _) = error_of(server.post("/fn/default/nobody/feedback", "application/json", one));
    assert_eq!(s, 404);
    let (s, c, _) = error_of(server.post(
        "/fn/default/ingest-json@1.0.0/feedback",
        "application/json",
        one,
    ));
    assert_eq!((s, c.as_str()), (400, "invalid_name"));
    // Labels need a token, whatever the function's [triggers] http.
    let r = server
        .http_as(None)
        .post(format!("{}{path}", server.url))
        .header("content-type", "application/json")
        .body(one)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);

    for (query, what) in [
        ("since=abc", "`since`"),
        ("since=400d", "366d"),
        ("limit=0", "`limit`"),
        ("labelled=maybe", "labelled"),
        ("nope=1", "nope"),
    ] {
        let (s, c, m) = error_of(server.get(&format!(
            "/admin/v1/tenants/default/datasets/ingest-json?{query}"
        )));
        assert_eq!((s, c.as_str()), (400, "invalid_query"), "{query}: {m}");
        assert!(m.contains(what), "{query}: {m}");
    }

    // The CLI names the line of a bad CSV, and refuses a file without the columns.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("bad.csv");
    let load = |text: &str| {
        std::fs::write(&csv, text).unwrap();
        let file = csv.to_str().unwrap();
        server.cli_err(&["feedback", "load", file, "--function", "ingest-json"])
    };
    let err = load("request_id,row,label\nabc,x,1\n");
    assert!(err.contains("line 2") && err.contains("`row`"), "{err}");
    let err = load("id,label\nabc,1\n");
    assert!(err.contains("no `request_id` column"), "{err}");
    server.assert_healthy();
}
