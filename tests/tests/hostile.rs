//! The hostile-input suite: requests on every route and guests that misbehave, each
//! answered with the status and JSON error it should get, and each followed by a
//! valid request that must still be served. One server per test runs the whole
//! list, so a case that took the host down fails every case after it; at the end
//! the server process is still the one that started (it never restarted).
//!
//! `cases` counts what ran; the README quotes the total.
use quiver_tests::{read_sample, Server};
use reqwest::blocking::multipart::{Form, Part};
use reqwest::blocking::{Body, RequestBuilder, Response};
use serde_json::{json, Value};

struct Suite<'a> {
    server: &'a Server,
    cases: std::cell::Cell<usize>,
}

impl<'a> Suite<'a> {
    fn new(server: &'a Server) -> Self {
        Suite {
            server,
            cases: std::cell::Cell::new(0),
        }
    }

    /// A `{"error": {"code", "message"}}` answer with this status and code; then
    /// the host still serves a valid request.
    fn expect(&self, what: &str, resp: Response, status: u16, code: &str) {
        let got = resp.status().as_u16();
        let body: Value = resp
            .json()
            .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        self.check(what, got, body, status, code);
    }

    /// A request that only declares a body of `length` bytes (never sent): the
    /// server must refuse it from the header, before reading or buffering any.
    fn expect_declared(
        &self,
        what: &str,
        path: &str,
        ctype: &str,
        length: usize,
        status: u16,
        code: &str,
    ) {
        use std::io::{Read as _, Write as _};
        let addr = self.server.url.trim_start_matches("http://");
        let mut tcp = std::net::TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        write!(
            tcp,
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ncontent-type: {ctype}\r\ncontent-length: {length}\r\nconnection: close\r\n\r\n",
            self.server.admin_token
        )
        .unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        let got: u16 = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what}: no status in {answer:?}"));
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        // The body may be chunked: take the JSON object inside.
        let json = body
            .find('{')
            .zip(body.rfind('}'))
            .map(|(a, b)| &body[a..=b])
            .unwrap_or_default();
        let body: Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{what}: {e}: {answer:?}"));
        self.check(what, got, body, status, code);
    }

    fn check(&self, what: &str, got: u16, body: Value, status: u16, code: &str) {
        let (got_code, message) = match (
            body["error"]["code"].as_str(),
            body["error"]["message"].as_str(),
        ) {
            (Some(c), Some(m)) => (c.to_string(), m.to_string()),
            _ => panic!("{what}: {got} without a JSON error: {body}"),
        };
        assert_eq!(
            (got, got_code.as_str()),
            (status, code),
            "{what}: {message}"
        );
        assert!(!message.is_empty(), "{what}: an empty message");
        self.still_serves(what);
    }

    /// The inference protocol's `{"error": "..."}` with this status.
    fn expect_oip(&self, what: &str, resp: Response, status: u16) {
        let got = resp.status().as_u16();
        let body: Value = resp
            .json()
            .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        assert_eq!(got, status, "{what}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        self.still_serves(what);
    }

    fn still_serves(&self, after: &str) {
        let resp = self.server.post(
            "/fn/default/txn-features",
            "application/json",
            read_sample("txn-features"),
        );
        assert_eq!(
            resp.status(),
            200,
            "after {after}: the host stopped serving"
        );
        let out: Value = resp.json().expect("rows");
        assert!(
            out["rows"].as_array().is_some_and(|r| !r.is_empty()),
            "after {after}: {out}"
        );
        self.cases.set(self.cases.get() + 1);
    }

    fn req(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.server
            .http()
            .request(method, format!("{}{path}", self.server.url))
    }

    fn post(&self, path: &str, body: impl Into<Body>) -> Response {
        self.req(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("request")
    }

    fn multipart(&self, path: &str, form: Form) -> Response {
        self.req(reqwest::Method::POST, path)
            .multipart(form)
            .send()
            .expect("request")
    }
}

const DEPLOY: &str = "/admin/v1/tenants/default/functions";
const MANIFEST: &str = "[function]\nname = 'x'\nversion = '1.0.0'\nkind = 'transform'\n";

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn infer(tensor: Value) -> Value {
    json!({ "inputs": [tensor] })
}

fn tensor(shape: Value, datatype: &str, data: Value) -> Value {
    json!({ "name": "log_amount", "shape": shape, "datatype": datatype, "data": data })
}

#[test]
fn every_route_refuses_bad_input_and_keeps_serving() {
    let mut server = Server::start();
    server.deploy("txn-features");
    server.deploy("hello-http");
    server.deploy_fraud_score();
    let s = Suite::new(&server);
    // Over the test server's 1 MiB --max-body, by little enough that the client has
    // sent it all before the server answers 413 and closes.
    let big = vec![b' '; (1 << 20) + (64 << 10)];

    // ---- /fn
    let f = "/fn/default/txn-features";
    s.expect("not JSON", s.post(f, "not json"), 400, "invalid_input");
    s.expect(
        "array of scalars",
        s.post(f, "[1, 2]"),
        400,
        "invalid_input",
    );
    s.expect(
        "rows not an array",
        s.post(f, r#"{"rows": 5}"#),
        400,
        "invalid_input",
    );
    s.expect(
        "nested 200 deep",
        s.post(f, nested(200)),
        400,
        "invalid_input",
    );
    s.expect(
        "mixed types",
        s.post(f, r#"[{"amount": 1, "ts": 0, "merchant": "m"}, {"amount": "x", "ts": 0, "merchant": "m"}]"#),
        400,
        "invalid_input",
    );
    s.expect(
        "body over --max-body",
        s.post(f, big.clone()),
        413,
        "payload_too_large",
    );
    s.expect_declared(
        "1 GiB declared",
        f,
        "application/json",
        1 << 30,
        413,
        "payload_too_large",
    );
    s.expect_declared(
        "a deploy of 1 GiB declared",
        DEPLOY,
        "multipart/form-data; boundary=b",
        1 << 30,
        413,
        "payload_too_large",
    );
    // Streamed without a length: answered 413 once the limit is passed, and the
    // connection may close while the client still sends (then the client sees that).
    let chunked = Body::new(std::io::Cursor::new(big.clone()));
    let sent = s
        .req(reqwest::Method::POST, f)
        .header("content-type", "application/json")
        .body(chunked)
        .send();
    match sent {
        Ok(resp) => s.expect(
            "chunked body over --max-body",
            resp,
            413,
            "payload_too_large",
        ),
        Err(e) => {
            assert!(e.is_body() || e.is_request(), "{e}");
            s.still_serves("chunked body over --max-body");
        }
    }
    s.expect(
        "unknown function",
        s.post("/fn/default/nope", "{}"),
        404,
        "not_found",
    );
    s.expect(
        "upper-case name",
        s.post("/fn/default/NoPe", "{}"),
        400,
        "invalid_name",
    );
    s.expect(
        "bad tenant",
        s.post("/fn/Bad_T/txn-features", "{}"),
        400,
        "invalid_name",
    );
    s.expect(
        "dot-dot name",
        s.post("/fn/default/..%2F..%2Fetc", "{}"),
        400,
        "invalid_name",
    );
    s.expect(
        "undecodable path",
        s.post("/fn/default/%FF", "{}"),
        400,
        "bad_request",
    );
    s.expect(
        "unknown version",
        s.post(&format!("{f}@9.9.9"), "{}"),
        404,
        "not_found",
    );
    s.expect(
        "SQL in a version",
        s.post(
            &format!("{f}@1.0.0'%3B%20DROP%20TABLE%20versions%3B--"),
            "{}",
        ),
        400,
        "invalid_version",
    );
    let get = s.req(reqwest::Method::GET, f).send().unwrap();
    s.expect("GET on /fn", get, 405, "method_not_allowed");
    s.expect(
        "http function at /fn",
        s.post("/fn/default/hello-http", "{}"),
        400,
        "wrong_kind",
    );

    // ---- /http
    let get = |p: &str| s.req(reqwest::Method::GET, p).send().unwrap();
    s.expect(
        "unknown http function",
        get("/http/default/nope/x"),
        404,
        "not_found",
    );
    s.expect(
        "typed function at /http",
        get("/http/default/txn-features/x"),
        400,
        "wrong_kind",
    );
    s.expect(
        "http body over --max-body",
        s.post("/http/default/hello-http/echo", big.clone()),
        413,
        "payload_too_large",
    );
    s.expect(
        "http guest past its timeout",
        get("/http/default/hello-http/spin/4000"),
        504,
        "timeout",
    );

    // ---- Open Inference Protocol
    let oip = "/v2/tenants/default/models/fraud-score/infer";
    for (what, shape) in [
        ("i64::MAX rows", json!([i64::MAX])),
        ("negative dimension", json!([-1])),
        ("overflowing shape", json!([4294967296u64, 4294967296u64])),
        ("rank 2 not [N,1]", json!([2, 2])),
        ("i64::MIN", json!([i64::MIN, 1])),
    ] {
        let body = infer(tensor(shape, "FP64", json!([1.0])));
        s.expect_oip(what, s.post(oip, body.to_string()), 400);
    }
    let body = infer(tensor(json!([5]), "FP64", json!([1.0])));
    s.expect_oip(
        "fewer values than the shape",
        s.post(oip, body.to_string()),
        400,
    );
    let body = infer(tensor(json!([1]), "FP8", json!([1.0])));
    s.expect_oip("unknown datatype", s.post(oip, body.to_string()), 400);
    let body = infer(tensor(json!([1]), "INT64", json!(["x"])));
    s.expect_oip("string for INT64", s.post(oip, body.to_string()), 400);
    s.expect_oip("not JSON", s.post(oip, "garbage"), 400);
    s.expect_oip("no inputs", s.post(oip, r#"{"inputs": []}"#), 400);
    let body = json!({"inputs": [tensor(json!([1]), "FP64", json!([nested(3)]))]});
    s.expect_oip("a string for FP64", s.post(oip, body.to_string()), 400);
    let deep = format!(
        r#"{{"inputs": [{{"name": "x", "shape": [1], "datatype": "FP64", "data": {}}}]}}"#,
        nested(300)
    );
    s.expect_oip("data nested 300 deep", s.post(oip, deep), 400);
    let valid = infer(tensor(json!([1]), "FP64", json!([1.0]))).to_string();
    s.expect_oip(
        "unknown model",
        s.post("/v2/tenants/default/models/nope/infer", valid.clone()),
        404,
    );
    s.expect_oip(
        "dot-dot model",
        s.post("/v2/tenants/default/models/..%2Fetc/infer", "{}"),
        400,
    );
    s.expect_oip(
        "dot-dot tenant in the path",
        s.post("/v2/tenants/..%2F..%2Fetc/models/fraud-score/infer", "{}"),
        400,
    );
    s.expect_oip("OIP body over --max-body", s.post(oip, big.clone()), 413);
    let resp = s
        .req(reqwest::Method::GET, "/v2/tenants/default/models/nope")
        .send()
        .unwrap();
    s.expect_oip("metadata of an unknown model", resp, 404);
    let resp = s.post(
        "/v2/tenants/default/models/txn-features/infer",
        valid.clone(),
    );
    s.expect_oip("a transform over the inference protocol", resp, 400);
    let resp = s
        .req(
            reqwest::Method::GET,
            "/v2/tenants/default/models/nope/ready",
        )
        .send()
        .unwrap();
    s.expect_oip("readiness of an unknown model", resp, 404);
    let resp = s
        .req(reqwest::Method::GET, "/v2/tenants/default/models/%FF")
        .send()
        .unwrap();
    s.expect_oip("undecodable model name", resp, 400);

    // ---- admin: deploy
    s.expect(
        "deploy without multipart",
        s.post(DEPLOY, "{}"),
        400,
        "bad_upload",
    );
    let huge_manifest = format!("{MANIFEST}[config]\nk = '{}'\n", "x".repeat(300 << 10));
    let form = Form::new().text("manifest", huge_manifest);
    s.expect(
        "manifest part over 256 KiB",
        s.multipart(DEPLOY, form),
        413,
        "payload_too_large",
    );
    let form = Form::new().part("component", Part::bytes(b"\0asm".to_vec()));
    s.expect(
        "no manifest part",
        s.multipart(DEPLOY, form),
        400,
        "bad_upload",
    );
    let form = Form::new().text("manifest", "[function\nname=");
    s.expect(
        "manifest not TOML",
        s.multipart(DEPLOY, form),
        422,
        "invalid_manifest",
    );
    let form = Form::new().text("manifest", format!("{MANIFEST}surprise = 1\n"));
    s.expect(
        "manifest unknown key",
        s.multipart(DEPLOY, form),
        422,
        "invalid_manifest",
    );
    let form = Form::new().text(
        "manifest",
        format!("{MANIFEST}[triggers]\nevents = ['Not A Topic']\n"),
    );
    s.expect(
        "manifest with an invalid event topic",
        s.multipart(DEPLOY, form),
        422,
        "invalid_manifest",
    );
    let form = Form::new().part("manifest", Part::bytes(vec![0xff, 0xfe, 0x00]));
    s.expect(
        "manifest not UTF-8",
        s.multipart(DEPLOY, form),
        400,
        "bad_upload",
    );
    let form = Form::new().text("manifest", MANIFEST).part(
        "component",
        Part::bytes(b"\0asm\x0d\0\x01\0garbage".to_vec()),
    );
    s.expect(
        "component garbage",
        s.multipart(DEPLOY, form),
        422,
        "invalid_component",
    );
    let form = Form::new().text("manifest", MANIFEST).text("evil", "x");
    s.expect(
        "unexpected part",
        s.multipart(DEPLOY, form),
        400,
        "bad_upload",
    );
    let form = Form::new().text("manifest", MANIFEST);
    s.expect(
        "deploy to a bad tenant",
        s.multipart("/admin/v1/tenants/A..B/functions", form),
        400,
        "invalid_name",
    );

    // ---- admin: models
    let models = "/admin/v1/tenants/default/models";
    s.expect_declared(
        "a model push of 2 GiB declared",
        models,
        "multipart/form-data; boundary=b",
        2 << 30,
        413,
        "payload_too_large",
    );
    let push = |meta: String, bytes: Vec<u8>| {
        Form::new()
            .part("metadata", Part::bytes(meta.into_bytes()))
            .part("model", Part::bytes(bytes))
    };
    let form = push(
        format!(
            r#"{{"name": "m", "version": "1.0.0", "lineage": "{}"}}"#,
            "x".repeat(300 << 10)
        ),
        vec![1],
    );
    s.expect(
        "model metadata over 256 KiB",
        s.multipart(models, form),
        413,
        "payload_too_large",
    );
    let form = push(
        r#"{"name": "Bad Name", "version": "1.0.0"}"#.into(),
        vec![1],
    );
    s.expect(
        "model with a bad name",
        s.multipart(models, form),
        400,
        "invalid_name",
    );
    let form = push(r#"{"name": "m", "version": "latest"}"#.into(), vec![1]);
    s.expect(
        "model with a bad version",
        s.multipart(models, form),
        400,
        "invalid_version",
    );
    let form = push("{not json".into(), vec![1]);
    s.expect(
        "model metadata not JSON",
        s.multipart(models, form),
        400,
        "invalid_json",
    );
    let form = push(
        r#"{"name": "m", "version": "1.0.0"}"#.into(),
        b"not onnx".to_vec(),
    );
    s.expect(
        "model not ONNX",
        s.multipart(models, form),
        422,
        "invalid_model",
    );
    let resp = s
        .req(
            reqwest::Method::GET,
            &format!("{models}/Bad%20Name/versions"),
        )
        .send()
        .unwrap();
    s.expect("versions of a bad model name", resp, 400, "invalid_name");
    let resp = s
        .req(
            reqwest::Method::DELETE,
            &format!("{models}/fraud-model/versions/1.0.0"),
        )
        .send()
        .unwrap();
    s.expect("delete a model a function binds", resp, 409, "in_use");

    // ---- admin: features backfill
    let group = "/admin/v1/tenants/default/features/merchant";
    let row = |values: Value| json!({ "rows": [{ "entity": "e", "values": values }] }).to_string();
    s.expect_declared(
        "a 20 MB backfill",
        group,
        "application/json",
        20 << 20,
        413,
        "payload_too_large",
    );
    let fifteen_mb = row(json!({ "blob": "x".repeat(15 << 20) }));
    s.expect(
        "a 15 MB feature value",
        s.post(group, fifteen_mb),
        413,
        "payload_too_large",
    );
    let big_value = row(json!({ "blob": "x".repeat(100 << 10) }));
    s.expect(
        "a text value over 64 KiB",
        s.post(group, big_value),
        413,
        "payload_too_large",
    );
    let rows: Vec<Value> = (0..10_001)
        .map(|i| json!({"entity": format!("e{i}"), "values": {"n": i}}))
        .collect();
    s.expect(
        "10,001 rows",
        s.post(group, json!({ "rows": rows }).to_string()),
        413,
        "payload_too_large",
    );
    s.expect(
        "an empty feature name",
        s.post(group, row(json!({ "": 1 }))),
        400,
        "invalid_features",
    );
    let long_name = row(json!({ "n".repeat(300): 1 }));
    s.expect(
        "a 300-byte feature name",
        s.post(group, long_name),
        400,
        "invalid_features",
    );
    let empty_entity = json!({ "rows": [{ "entity": "", "values": {"n": 1} }] }).to_string();
    s.expect(
        "an empty entity",
        s.post(group, empty_entity),
        400,
        "invalid_features",
    );
    s.expect(
        "a list value",
        s.post(group, row(json!({ "n": [1, 2] }))),
        400,
        "invalid_features",
    );
    s.expect(
        "a bad group",
        s.post(
            "/admin/v1/tenants/default/features/Bad",
            row(json!({ "n": 1 })),
        ),
        400,
        "invalid_name",
    );
    s.expect("backfill not JSON", s.post(group, "{"), 400, "invalid_json");

    // ---- admin: versions, rollback, delete
    let admin = "/admin/v1/tenants/default/functions";
    let resp = s
        .req(
            reqwest::Method::GET,
            &format!("{admin}/model%3Afraud-model/versions"),
        )
        .send()
        .unwrap();
    s.expect("versions of a model record", resp, 400, "invalid_name");
    s.expect(
        "rollback a model record",
        s.post(&format!("{admin}/model%3Afraud-model/rollback"), "{}"),
        400,
        "invalid_name",
    );
    let rollback = format!("{admin}/txn-features/rollback");
    s.expect(
        "rollback body not JSON",
        s.post(&rollback, "{"),
        400,
        "invalid_json",
    );
    s.expect(
        "rollback to a missing version",
        s.post(&rollback, r#"{"to": "9.9.9"}"#),
        404,
        "not_found",
    );
    let del = |p: &str| s.req(reqwest::Method::DELETE, p).send().unwrap();
    s.expect(
        "delete the serving version",
        del(&format!("{admin}/txn-features/versions/1.0.0")),
        409,
        "in_use",
    );
    s.expect(
        "delete a bad version",
        del(&format!("{admin}/txn-features/versions/x%27y")),
        400,
        "invalid_version",
    );
    s.expect(
        "delete with a bad flag",
        del(&format!("{admin}/txn-features/versions/1.0.0?force=maybe")),
        400,
        "bad_request",
    );
    s.expect(
        "unknown admin route",
        get("/admin/v1/nope"),
        404,
        "not_found",
    );
    s.expect_oip("unknown protocol route", get("/v2/nope/at/all"), 404);

    let cases = s.cases.get();
    server.assert_running();
    eprintln!("hostile routes: {cases} cases");
    assert!(cases >= 79, "{cases} cases ran");
}

/// Guests that misbehave on purpose: each call fails with the error that names
/// what it did, and the host (one process throughout) keeps serving.
#[test]
fn hostile_guests_are_contained() {
    let mut server =
        Server::start_with(&["--features-capacity", "2MiB", "--inference-threads", "1"]);
    server.deploy("txn-features");
    server.deploy("chaos");
    server.push_model(
        "functions/fraud-score/model/fraud.onnx",
        "fraud-model",
        "1.0.0",
    );
    // A long timeout: the memory cases must be stopped by the memory limit even on a
    // loaded CI machine, not by the clock.
    server.deploy_with("nn-chaos", &["--set", "limits.timeout=30s"]);
    server.push_model("tests/fixtures/models/slow.onnx", "slow-model", "1.0.0");
    server.deploy_with(
        "fraud-score",
        &[
            "--name",
            "slow-score",
            "--set",
            "models.fraud=slow-model@^1",
            "--set",
            "limits.timeout=300ms",
        ],
    );
    let s = Suite::new(&server);
    let mode = |m: &str| json!([{ "mode": m }]).to_string();
    let chaos = "/fn/default/chaos";
    s.expect("endless loop", s.post(chaos, mode("loop")), 504, "timeout");
    s.expect(
        "unbounded memory growth",
        s.post(chaos, mode("oom")),
        500,
        "memory_limit_exceeded",
    );
    s.expect(
        "many small allocations",
        s.post(chaos, mode("allocs")),
        500,
        "memory_limit_exceeded",
    );
    s.expect(
        "deep recursion",
        s.post(chaos, mode("recurse")),
        500,
        "trap",
    );
    s.expect("a panic", s.post(chaos, mode("trap")), 500, "trap");
    s.expect(
        "a 1 MiB feature value",
        s.post(chaos, mode("feature-huge")),
        429,
        "limit_exceeded",
    );
    s.expect(
        "features past the tenant's budget",
        s.post(chaos, mode("feature-flood")),
        429,
        "limit_exceeded",
    );
    s.expect(
        "resources never dropped",
        s.post(chaos, mode("resources")),
        429,
        "limit_exceeded",
    );
    s.expect(
        "a 24 MiB result",
        s.post(chaos, mode("big-output")),
        502,
        "bad_output",
    );
    let nn = "/fn/default/nn-chaos";
    s.expect(
        "wasi-nn tensors never dropped",
        s.post(nn, mode("tensors")),
        500,
        "memory_limit_exceeded",
    );
    s.expect(
        "a tensor of u32::MAX x u32::MAX",
        s.post(nn, mode("dims")),
        400,
        "invalid_input",
    );
    s.expect(
        "compute outputs never dropped",
        s.post(nn, mode("outputs")),
        500,
        "memory_limit_exceeded",
    );
    s.expect(
        "execution contexts never dropped",
        s.post(nn, mode("contexts")),
        429,
        "limit_exceeded",
    );
    // 256 rows through 1024 layers of 1024x1024: seconds of compute, past 300 ms.
    let one = quiver_tests::fraud_reference().0[0].clone();
    let rows = quiver_tests::fraud_input_rows(&vec![one; 256]).to_string();
    s.expect(
        "a model run past the timeout",
        s.post("/fn/default/slow-score", rows),
        504,
        "timeout",
    );
    // The timed-out run finishes on its pool thread (the pool does not grow); once it
    // has, a normal inference call is served again.
    let echo = json!([{ "mode": "echo", "log_amount": 7.9, "hour_of_day": 3, "merchant_z": 2.5, "merchant_known": false }]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let resp = s.post(nn, echo.to_string());
        if resp.status() == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            resp.text().unwrap_or_default()
        );
    }
    let health: Value = server.get("/healthz").json().unwrap();
    assert_eq!(health["inference"]["threads"], 1, "{health}");
    let cases = s.cases.get();
    server.assert_running();
    eprintln!("hostile guests: {cases} cases");
    assert!(cases >= 14, "{cases} cases ran");
}

/// Requests naming functions that do not exist add no Prometheus series: 600 of
/// them leave `/metrics` the size it was (one bounded counter counts them).
#[test]
fn unknown_names_add_no_metric_series() {
    let server = Server::start();
    server.deploy("txn-features");
    let resp = server.post(
        "/fn/default/txn-features",
        "application/json",
        read_sample("txn-features"),
    );
    assert_eq!(resp.status(), 200);
    let before = server.get("/metrics").text().unwrap();
    for i in 0..600 {
        let r = server.post(&format!("/fn/default/nope-{i}"), "application/json", "{}");
        assert_eq!(r.status(), 404);
        let infer = r#"{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}"#;
        let r = server.post(
            &format!("/v2/tenants/default/models/ghost-{i}/infer"),
            "application/json",
            infer,
        );
        assert_eq!(r.status(), 404);
        let r = server.post(&format!("/fn/default/BAD-{i}"), "application/json", "{}");
        assert_eq!(r.status(), 400);
    }
    let after = server.get("/metrics").text().unwrap();
    assert!(!after.contains("nope-") && !after.contains("ghost-") && !after.contains("t-1"));
    // The same series as before plus the unresolved counter's few (route, code) ones.
    let series = |t: &str| t.lines().filter(|l| !l.starts_with('#')).count();
    assert!(
        series(&after) <= series(&before) + 4,
        "{} series before, {} after",
        series(&before),
        series(&after)
    );
    assert!(
        after.len() < before.len() + 2048,
        "{} -> {} bytes",
        before.len(),
        after.len()
    );
    assert_eq!(
        server.metric("quiver_unresolved_requests_total{code=\"not_found\",route=\"fn\"}"),
        Some(600.0)
    );
}
