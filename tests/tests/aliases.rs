//! Model aliases (`champion`) that `[models]` follows at load, with their history
//! (`quiver models history`), and the lineage of a version back to the first
//! (`quiver models lineage`).

use quiver_tests::{error_of, fraud_input_rows, fraud_reference, series, Server};
use serde_json::{json, Value};

const FRAUD: &str = "functions/fraud-score/model/fraud.onnx";

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Score a few rows; the predictions count under the model version that ran them.
fn score(server: &Server) {
    let (rows, _) = fraud_reference();
    let body = fraud_input_rows(&rows[..3]).to_string();
    let r = server.post("/fn/default/fraud-score", "application/json", body);
    assert_eq!(r.status(), 200);
}

fn scored_by(server: &Server, version: &str) -> f64 {
    let model = format!("fraud-model@{version}");
    let s = series(
        "quiver_prediction_value_count",
        &[
            ("function", "fraud-score"),
            ("model", model.as_str()),
            ("output", "score"),
        ],
    );
    server.metric(&s).unwrap_or(0.0)
}

#[test]
fn an_alias_moves_what_functions_run_and_every_move_is_kept() {
    let server = Server::start();
    server.push_model(FRAUD, "fraud-model", "1.0.0");
    for (v, parent) in [("1.1.0", "1.0.0"), ("1.2.0", "1.1.0")] {
        server.cli_ok(&[
            "models",
            "push",
            FRAUD,
            "--name",
            "fraud-model",
            "--version",
            v,
            "--parent",
            parent,
            "--trainer",
            "retrain-fraud@1.0.0",
            "--metric",
            "auc=0.9",
        ]);
    }
    // No alias yet: a deploy that follows one is refused, naming it.
    let err = server.cli_err(&[
        "deploy",
        "functions/fraud-score",
        "--set",
        r#"models.fraud="fraud-model@champion""#,
    ]);
    assert!(err.contains("no alias `champion`"), "{err}");

    server.cli_ok(&[
        "models",
        "alias",
        "fraud-model",
        "champion",
        "1.0.0",
        "--reason",
        "first",
    ]);
    server.deploy_with(
        "fraud-score",
        &["--set", r#"models.fraud="fraud-model@champion""#],
    );
    score(&server);
    assert_eq!(scored_by(&server, "1.0.0"), 3.0);

    // Moving the alias moves what the next call runs, with no deploy.
    let out = server.cli_ok(&[
        "models",
        "alias",
        "fraud-model",
        "champion",
        "1.2.0",
        "--reason",
        "better auc",
    ]);
    assert!(out.contains("1.0.0 -> 1.2.0"), "{out}");
    score(&server);
    assert_eq!(scored_by(&server, "1.2.0"), 3.0);
    assert_eq!(
        scored_by(&server, "1.0.0"),
        3.0,
        "nothing more ran on 1.0.0"
    );
    // The same place again is no move.
    let again = server.cli_ok(&["models", "alias", "fraud-model", "champion", "1.2.0"]);
    assert!(again.contains("already"), "{again}");

    let h = json_of(&server.cli_ok(&["--json", "models", "history", "fraud-model"]));
    assert_eq!(h["aliases"], json!({"champion": "1.2.0"}));
    let moves = h["history"].as_array().unwrap();
    assert_eq!(moves.len(), 2, "{h}");
    assert_eq!(moves[0]["from"], Value::Null);
    assert_eq!(
        (moves[1]["from"].clone(), moves[1]["to"].clone()),
        (json!("1.0.0"), json!("1.2.0"))
    );
    assert_eq!(moves[1]["reason"], "better auc");
    assert!(
        moves[1]["actor"].as_str().unwrap().starts_with("platform:"),
        "{h}"
    );
    assert!(!moves[1]["at"].as_str().unwrap().is_empty());
    let text = server.cli_ok(&["models", "history", "fraud-model"]);
    assert!(
        text.contains("champion -> 1.2.0") && text.contains("better auc"),
        "{text}"
    );
    let audit = server.cli_ok(&["audit"]);
    assert!(audit.contains("models.alias"), "{audit}");

    // Lineage walks back through the parents to the first version.
    let l = json_of(&server.cli_ok(&["--json", "models", "lineage", "fraud-model@1.2.0"]));
    let chain: Vec<&str> = l["lineage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["version"].as_str().unwrap())
        .collect();
    assert_eq!(chain, ["1.2.0", "1.1.0", "1.0.0"]);
    assert_eq!(l["lineage"][0]["lineage"]["trainer"], "retrain-fraud@1.0.0");
    let err = server.cli_err(&["models", "lineage", "fraud-model"]);
    assert!(err.contains("@VERSION"), "{err}");

    // Bad moves are refused and change nothing.
    let path = "/admin/v1/tenants/default/models/fraud-model/aliases";
    let put = |alias: &str, body: &str| {
        server
            .http()
            .put(format!("{}{path}/{alias}", server.url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    for (alias, body, status, code) in [
        ("champion", r#"{"version": "9.9.9"}"#, 404, "not_found"),
        ("Champion", r#"{"version": "1.0.0"}"#, 400, "invalid_alias"),
        ("1st", r#"{"version": "1.0.0"}"#, 400, "invalid_alias"),
        (
            "champion",
            r#"{"version": "1.0.0", "by": "me"}"#,
            400,
            "invalid_body",
        ),
        ("champion", r#"{"version": "one"}"#, 400, "invalid_version"),
        ("champion", "[1", 400, "invalid_body"),
    ] {
        let (s, c, m) = error_of(put(alias, body));
        assert_eq!((s, c.as_str()), (status, code), "{alias} {body}: {m}");
    }
    let long = json!({"version": "1.0.0", "reason": "x".repeat(2000)}).to_string();
    let (s, c, m) = error_of(put("champion", &long));
    assert_eq!((s, c.as_str()), (400, "invalid_body"), "{m}");
    let h = json_of(&server.cli_ok(&["--json", "models", "history", "fraud-model"]));
    assert_eq!(h["history"].as_array().unwrap().len(), 2, "{h}");
    // The version an alias points at is not deleted from under it.
    let err = server.cli_err(&["models", "rm", "fraud-model@1.2.0"]);
    assert!(err.contains("alias `champion`"), "{err}");
    let (s, _, _) = error_of(server.get("/admin/v1/tenants/default/models/nope/aliases"));
    assert_eq!(s, 404);
    server.assert_healthy();
}
