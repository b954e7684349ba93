//! Serving an ONNX file with no code: `functions/model-serve` bound to each model
//! that `tests/models/make_models.py` generates (f32 NCHW, i64 token ids + mask, u8,
//! several outputs), called over OIP v2 REST (JSON and the binary extension), every
//! output checked against what onnxruntime answered for the same inputs.

use quiver_tests::{py_env, repo, Server};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

/// Generate the models and onnxruntime's reference answers into `dir`.
fn make_models(dir: &Path) -> Value {
    let out = Command::new(py_env())
        .arg(repo().join("tests/models/make_models.py"))
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make_models.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap()
}

/// Push `dir/<name>.onnx` as `<name>@1.0.0` and serve it as function `<name>`.
fn serve(server: &Server, dir: &Path, name: &str) {
    let file = dir.join(format!("{name}.onnx"));
    server.push_model(file.to_str().unwrap(), name, "1.0.0");
    server.deploy_with(
        "model-serve",
        &[
            "--name",
            name,
            "--set",
            &format!("models.model=\"{name}@^1\""),
        ],
    );
}

fn infer_path(name: &str) -> String {
    format!("/v2/tenants/default/models/{name}/infer")
}

/// An OIP JSON request of the reference's inputs.
fn json_request(reference: &Value) -> Value {
    let inputs: Vec<Value> = reference["inputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, t)| {
            json!({"name": name, "datatype": t["datatype"], "shape": t["shape"], "data": t["data"]})
        })
        .collect();
    json!({ "inputs": inputs })
}

/// Check an OIP response's outputs against onnxruntime's: same names, datatypes
/// and shapes, values within 1e-4 (integers exactly).
fn assert_matches(model: &str, got: &Value, want: &Value) {
    let outputs = got["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("{model}: {got}"));
    let want = want["outputs"].as_object().unwrap();
    assert_eq!(outputs.len(), want.len(), "{model}: {got}");
    for o in outputs {
        let name = o["name"].as_str().unwrap();
        let w = &want[name];
        assert!(w.is_object(), "{model}: unexpected output {name}: {got}");
        assert_eq!(o["datatype"], w["datatype"], "{model}.{name}");
        assert_eq!(o["shape"], w["shape"], "{model}.{name}");
        let (g, w) = (o["data"].as_array().unwrap(), w["data"].as_array().unwrap());
        assert_eq!(g.len(), w.len(), "{model}.{name}");
        for (i, (g, w)) in g.iter().zip(w).enumerate() {
            if w.is_i64() {
                assert_eq!(g, w, "{model}.{name}[{i}]");
            } else {
                let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                assert!((g - w).abs() < 1e-4, "{model}.{name}[{i}]: {g} vs {w}");
            }
        }
    }
}

#[test]
fn onnx_models_of_every_rank_and_type_serve_with_no_code() {
    let dir = tempfile::tempdir().unwrap();
    let reference = make_models(dir.path());
    let server = Server::start();
    let mut names: Vec<&String> = reference.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["image", "multi", "pixels", "tokens"]);
    // With no function source: `models push --serve` for three, `serve-model` for one.
    for name in &names {
        let file = dir.path().join(format!("{name}.onnx"));
        let file = file.to_str().unwrap();
        match name.as_str() {
            "multi" => {
                server.push_model(file, name, "1.0.0");
                let out = server.cli_ok(&["serve-model", "multi@^1"]);
                assert!(out.contains("as function multi@1.0.0"), "{out}");
            }
            _ => {
                let out = server.cli_ok(&[
                    "models",
                    "push",
                    file,
                    "--name",
                    name,
                    "--version",
                    "1.0.0",
                    "--serve",
                ]);
                assert!(
                    out.contains(&format!("served as function {name}@1.0.0")),
                    "{out}"
                );
            }
        }
    }
    // OIP metadata is the model's own: names, datatypes, shapes (-1: any).
    let meta: Value = server
        .get("/v2/tenants/default/models/tokens")
        .json()
        .unwrap();
    assert_eq!(
        meta["inputs"],
        json!([
            {"name": "input_ids", "datatype": "INT64", "shape": [-1, 6]},
            {"name": "attention_mask", "datatype": "INT64", "shape": [-1, 6]},
        ]),
        "{meta}"
    );
    assert_eq!(
        meta["outputs"],
        json!([{"name": "embedding", "datatype": "FP32", "shape": [-1, 8]}]),
        "{meta}"
    );
    for name in &names {
        let r = &reference[name.as_str()];
        let resp = server
            .http()
            .post(format!("{}{}", server.url, infer_path(name)))
            .json(&json_request(r))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "{name}");
        assert_matches(name, &resp.json().unwrap(), r);
    }
    let err = server.cli_err(&["serve-model", "image@^2"]);
    assert!(
        err.contains("no version of model `image` matches `^2`"),
        "{err}"
    );
    // An alias is followed: served as it points now, bound to the alias.
    server.cli_ok(&["models", "alias", "tokens", "champion", "1.0.0"]);
    let out = server.cli_ok(&[
        "serve-model",
        "tokens@champion",
        "--name",
        "tokens-champion",
    ]);
    assert!(
        out.contains("serving model tokens@1.0.0 as function tokens-champion@1.0.0"),
        "{out}"
    );
    let resp = server
        .http()
        .post(format!("{}{}", server.url, infer_path("tokens-champion")))
        .json(&json_request(&reference["tokens"]))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_matches("tokens", &resp.json().unwrap(), &reference["tokens"]);
    let err = server.cli_err(&["serve-model", "tokens@nope"]);
    assert!(err.contains("model `tokens` has no alias `nope`"), "{err}");
    server.assert_healthy();
}

#[test]
fn binary_tensors_in_and_out_and_refusals_that_name_the_model_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let reference = make_models(dir.path());
    let server = Server::start();
    serve(&server, dir.path(), "image");
    serve(&server, dir.path(), "multi");

    // The image model's NCHW input as raw little-endian f32, its logits as JSON.
    let r = &reference["image"];
    let pixels = &r["inputs"]["pixels"];
    let raw: Vec<u8> = pixels["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|x| (x.as_f64().unwrap() as f32).to_le_bytes())
        .collect();
    let head = json!({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": pixels["shape"],
        "parameters": {"binary_data_size": raw.len()}}]})
    .to_string();
    let resp = server
        .http()
        .post(format!("{}{}", server.url, infer_path("image")))
        .header("inference-header-content-length", head.len().to_string())
        .header("content-type", "application/octet-stream")
        .body([head.as_bytes(), &raw].concat())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_matches("image", &resp.json().unwrap(), r);

    // The multi-output model's INT64 argmax asked for as binary, the rest as JSON.
    let r = &reference["multi"];
    let mut req = json_request(r);
    req["outputs"] = json!([{"name": "argmax", "parameters": {"binary_data": true}}]);
    let resp = server
        .http()
        .post(format!("{}{}", server.url, infer_path("multi")))
        .json(&req)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let head_len: usize = resp.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = resp.bytes().unwrap();
    let head: Value = serde_json::from_slice(&body[..head_len]).unwrap();
    let outputs = head["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "only the output asked for: {head}");
    assert_eq!(outputs[0]["datatype"], "INT64");
    let argmax: Vec<i64> = body[head_len..]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want: Vec<i64> = r["outputs"]["argmax"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(argmax, want);

    // Refusals name what the model takes.
    let bad = |model: &str, body: Value, says: &str| {
        let resp = server
            .http()
            .post(format!("{}{}", server.url, infer_path(model)))
            .json(&body)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let v: Value = resp.json().unwrap();
        assert_eq!(status, 400, "{v}");
        let message = v["error"].as_str().unwrap_or_else(|| panic!("{v}"));
        assert!(message.contains(says), "{message:?} does not say {says:?}");
    };
    bad(
        "image",
        json!({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": vec![0.0; 192]}]}),
        "missing input `pixels`",
    );
    bad(
        "image",
        json!({"inputs": [{"name": "pixels", "datatype": "INT64", "shape": [1, 3, 8, 8], "data": vec![0; 192]}]}),
        "is a tensor of int64; the model takes float32",
    );
    bad(
        "image",
        json!({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 192], "data": vec![0.0; 192]}]}),
        "has shape [1, 192]; the model takes [-1, 3, 8, 8]",
    );
    bad(
        "image",
        json!({"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 3, 8, 9], "data": vec![0.0; 216]}]}),
        "has shape [1, 3, 8, 9]; the model takes [-1, 3, 8, 8]",
    );
    server.assert_healthy();
}

#[test]
fn a_transform_model_transform_pipeline_classifies_uint8_images() {
    let dir = tempfile::tempdir().unwrap();
    make_models(dir.path());
    let want: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("pipeline.json")).unwrap()).unwrap();
    let server = Server::start();
    let file = dir.path().join("image.onnx");
    server.cli_ok(&[
        "models",
        "push",
        file.to_str().unwrap(),
        "--name",
        "vision",
        "--version",
        "1.0.0",
        "--serve",
    ]);
    server.deploy("image-prep");
    server.deploy("top-class");
    server.deploy("vision-pipeline");
    let image = &want["image"];
    let body = json!({"inputs": [{"name": "image", "datatype": "UINT8",
        "shape": image["shape"], "data": image["data"]}]});
    let resp = server
        .http()
        .post(format!("{}{}", server.url, infer_path("vision-pipeline")))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got: Value = resp.json().unwrap();
    let output = |name: &str| {
        got["outputs"]
            .as_array()
            .and_then(|o| o.iter().find(|t| t["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no {name}: {got}"))
    };
    let class = output("class");
    assert_eq!(class["datatype"], "INT64");
    assert_eq!(class["data"], want["class"], "{got}");
    let probability = output("probability");
    assert_eq!(probability["shape"], json!([6]));
    for (g, w) in probability["data"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["probability"].as_array().unwrap())
    {
        let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
        assert!((g - w).abs() < 1e-4, "probability {g} vs onnxruntime's {w}");
    }
    // The first stage refuses what is not an image, naming what it takes.
    let resp = server
        .http()
        .post(format!("{}{}", server.url, infer_path("vision-pipeline")))
        .json(
            &json!({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 2, 2, 3],
            "data": vec![0.5; 12]}]}),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("send uint8 images"),
        "{v}"
    );
    server.assert_healthy();
}
