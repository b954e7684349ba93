//! Tenancy end to end: tokens and scopes, isolation (escape attempts), public
//! functions, quotas, the audit log's chain, usage and per-tenant metrics. Each
//! case names itself; after the suites the host is still the same process.

use quiver_tests::{error_of, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A token made with the CLI: `quiver --tenant T tokens create --scope S`.
fn token(server: &Server, tenant: &str, scope: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "--tenant", tenant, "--json", "tokens", "create", "--scope", scope,
    ];
    args.extend_from_slice(extra);
    let out: Value = serde_json::from_str(&server.cli_ok(&args)).expect("tokens create --json");
    let t = out["token"].as_str().expect("token").to_string();
    assert!(t.starts_with("qvr_") && t.len() >= 4 + 12 + 1 + 64, "{t}");
    t
}

struct World {
    server: Server,
    acme_invoke: String,
    acme_deploy: String,
    acme_admin: String,
    beta_invoke: String,
    beta_admin: String,
}

fn world() -> World {
    let server = Server::start();
    for t in ["acme", "beta"] {
        server.cli_ok(&["tenants", "create", t]);
        server.cli_ok(&["--tenant", t, "deploy", "functions/txn-features"]);
    }
    World {
        acme_invoke: token(&server, "acme", "invoke", &[]),
        acme_deploy: token(&server, "acme", "deploy", &[]),
        acme_admin: token(&server, "acme", "admin", &[]),
        beta_invoke: token(&server, "beta", "invoke", &[]),
        beta_admin: token(&server, "beta", "admin", &[]),
        server,
    }
}

impl World {
    fn send(
        &self,
        token: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> reqwest::blocking::Response {
        let mut req = self
            .server
            .http_as(token)
            .request(method, format!("{}{path}", self.server.url))
            .header("content-type", "application/json");
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().expect("request")
    }

    /// Expect `status` and `code`; returns the body text for comparisons.
    fn expect(
        &self,
        what: &str,
        resp: reqwest::blocking::Response,
        status: u16,
        code: &str,
    ) -> String {
        let got = resp.status().as_u16();
        let www = resp.headers().get("www-authenticate").cloned();
        let text = resp.text().unwrap_or_default();
        assert_eq!(got, status, "{what}: {text}");
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
        let got_code = v["error"]["code"].as_str().unwrap_or("");
        assert_eq!(got_code, code, "{what}: {text}");
        if status == 401 {
            assert_eq!(
                www.as_ref().map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{what}"
            );
        }
        text
    }
}

fn sample() -> Vec<u8> {
    quiver_tests::read_sample("txn-features")
}

#[test]
fn tokens_scopes_and_isolation_hold_against_escape_attempts() {
    let w = world();
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;
    let delete = reqwest::Method::DELETE;

    // The tenant's own token works on its own function.
    let ok = w.send(
        Some(&w.acme_invoke),
        post.clone(),
        "/fn/acme/txn-features",
        Some(sample()),
    );
    assert_eq!(ok.status(), 200);
    let mut cases = 0;
    let mut case = |what: &str, resp, status, code| {
        cases += 1;
        w.expect(what, resp, status, code)
    };

    // 1-5: bad tokens.
    case(
        "no token",
        w.send(None, post.clone(), "/fn/acme/txn-features", Some(sample())),
        401,
        "unauthorized",
    );
    let resp = w
        .server
        .http_as(None)
        .post(format!("{}/fn/acme/txn-features", w.server.url))
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .body(sample())
        .send()
        .unwrap();
    case(
        "basic auth instead of a bearer token",
        resp,
        401,
        "unauthorized",
    );
    let forged = format!("qvr_{}_{}", "0".repeat(12), "0".repeat(64));
    case(
        "a forged token",
        w.send(
            Some(&forged),
            post.clone(),
            "/fn/acme/txn-features",
            Some(sample()),
        ),
        401,
        "unauthorized",
    );
    let expiring = token(&w.server, "acme", "invoke", &["--expires", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let text = case(
        "an expired token",
        w.send(
            Some(&expiring),
            post.clone(),
            "/fn/acme/txn-features",
            Some(sample()),
        ),
        401,
        "unauthorized",
    );
    assert!(text.contains("expired"), "{text}");
    let revoked = token(&w.server, "acme", "invoke", &[]);
    let ls: Value = serde_json::from_str(
        &w.server
            .cli_ok(&["--tenant", "acme", "--json", "tokens", "ls"]),
    )
    .unwrap();
    let id = ls["tokens"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(revoked.contains(&id), "the newest token's id is part of it");
    w.server
        .cli_ok(&["--tenant", "acme", "tokens", "revoke", &id]);
    case(
        "a revoked token",
        w.send(
            Some(&revoked),
            post.clone(),
            "/fn/acme/txn-features",
            Some(sample()),
        ),
        401,
        "unauthorized",
    );

    // 6-13: acme's tokens on beta's routes: 404, exactly as for a tenant that does not exist.
    let hidden = case(
        "invoke another tenant's function",
        w.send(
            Some(&w.acme_invoke),
            post.clone(),
            "/fn/beta/txn-features",
            Some(sample()),
        ),
        404,
        "not_found",
    );
    let absent = w.expect(
        "invoke in a tenant that does not exist",
        w.send(
            Some(&w.acme_invoke),
            post.clone(),
            "/fn/gamma/txn-features",
            Some(sample()),
        ),
        404,
        "not_found",
    );
    assert_eq!(
        hidden.replace("beta", "X"),
        absent.replace("gamma", "X"),
        "the answers differ only by the name asked for"
    );
    assert!(!hidden.contains("txn-features"), "{hidden}");
    // Every other route of beta's, with the acme token of the scope it needs.
    for (what, token, method, path, body) in [
        (
            "list another tenant's functions",
            &w.acme_admin,
            &get,
            "/admin/v1/tenants/beta/functions",
            None,
        ),
        (
            "read another tenant's versions",
            &w.acme_admin,
            &get,
            "/admin/v1/tenants/beta/functions/txn-features/versions",
            None,
        ),
        (
            "roll back another tenant's function",
            &w.acme_deploy,
            &post,
            "/admin/v1/tenants/beta/functions/txn-features/rollback",
            None,
        ),
        (
            "delete another tenant's version",
            &w.acme_deploy,
            &delete,
            "/admin/v1/tenants/beta/functions/txn-features/versions/1.0.0?force=true",
            None,
        ),
        (
            "list another tenant's models",
            &w.acme_admin,
            &get,
            "/admin/v1/tenants/beta/models",
            None,
        ),
        (
            "backfill another tenant's features",
            &w.acme_deploy,
            &post,
            "/admin/v1/tenants/beta/features/merchant",
            Some(b"[]".to_vec()),
        ),
        (
            "read another tenant's tokens",
            &w.acme_admin,
            &get,
            "/admin/v1/tenants/beta/tokens",
            None,
        ),
        (
            "read another tenant's usage",
            &w.acme_admin,
            &get,
            "/admin/v1/tenants/beta/usage",
            None,
        ),
        (
            "read another tenant's audit log",
            &w.acme_admin,
            &get,
            "/admin/v1/tenants/beta/audit",
            None,
        ),
    ] {
        case(
            what,
            w.send(Some(token), method.clone(), path, body),
            404,
            "not_found",
        );
    }
    let beta_tokens: Value = w
        .send(
            Some(&w.beta_admin),
            get.clone(),
            "/admin/v1/tenants/beta/tokens",
            None,
        )
        .json()
        .unwrap();
    let beta_id = beta_tokens["tokens"][0]["id"].as_str().unwrap().to_string();
    case(
        "revoke another tenant's token through one's own tenant",
        w.send(
            Some(&w.acme_admin),
            delete.clone(),
            &format!("/admin/v1/tenants/acme/tokens/{beta_id}"),
            None,
        ),
        404,
        "not_found",
    );
    // The deploy itself, over another tenant's name.
    let form = reqwest::blocking::multipart::Form::new()
        .text(
            "manifest",
            "[function]\nname='txn-features'\nversion='9.0.0'\nkind='transform'\n",
        )
        .part(
            "component",
            reqwest::blocking::multipart::Part::bytes(b"\0asm".to_vec()),
        );
    let resp = w
        .server
        .http_as(Some(&w.acme_deploy))
        .post(format!("{}/admin/v1/tenants/beta/functions", w.server.url))
        .multipart(form)
        .send()
        .unwrap();
    case(
        "deploy over another tenant's function",
        resp,
        404,
        "not_found",
    );
    // The inference protocol takes the tenant from the token: acme's token sees acme's functions only.
    case(
        "OIP by token names only the token's tenant",
        w.send(
            Some(&w.beta_invoke),
            post.clone(),
            "/v2/models/nope/infer",
            Some(b"{}".to_vec()),
        ),
        404,
        "",
    );

    // 14-17: scopes.
    let form = reqwest::blocking::multipart::Form::new().text("manifest", "x");
    let resp = w
        .server
        .http_as(Some(&w.acme_invoke))
        .post(format!("{}/admin/v1/tenants/acme/functions", w.server.url))
        .multipart(form)
        .send()
        .unwrap();
    case("deploy with an invoke token", resp, 403, "forbidden");
    for (what, token, method, path, body) in [
        (
            "create a token with a deploy token",
            &w.acme_deploy,
            &post,
            "/admin/v1/tenants/acme/tokens",
            &b"{}"[..],
        ),
        (
            "create a tenant with a tenant admin token",
            &w.acme_admin,
            &post,
            "/admin/v1/tenants",
            br#"{"name":"mine"}"#,
        ),
        (
            "raise one's own quota",
            &w.acme_admin,
            &reqwest::Method::PUT,
            "/admin/v1/tenants/acme/quota",
            br#"{"rate":1000000}"#,
        ),
        (
            "grant oneself outbound HTTP",
            &w.acme_admin,
            &post,
            "/admin/v1/tenants/acme/grants",
            br#"{"capability":"outbound","pattern":"https://*.com"}"#,
        ),
        (
            "collect garbage platform-wide",
            &w.acme_admin,
            &post,
            "/admin/v1/gc",
            b"",
        ),
    ] {
        case(
            what,
            w.send(Some(token), method.clone(), path, Some(body.to_vec())),
            403,
            "forbidden",
        );
    }

    // 18-25: names with tricks, encodings and injections.
    for (what, path, code) in [
        (
            "a tenant with an encoded slash",
            "/fn/beta%2F..%2Facme/txn-features",
            "invalid_name",
        ),
        (
            "a dot-dot tenant",
            "/fn/..%2Fbeta/txn-features",
            "invalid_name",
        ),
        (
            "an upper-case tenant",
            "/fn/ACME/txn-features",
            "invalid_name",
        ),
        (
            "a tenant with a NUL",
            "/fn/acme%00/txn-features",
            "invalid_name",
        ),
        (
            "a function with an encoded slash",
            "/fn/acme/..%2F..%2Fbeta%2Ftxn-features",
            "invalid_name",
        ),
    ] {
        case(
            what,
            w.send(Some(&w.acme_invoke), post.clone(), path, Some(sample())),
            400,
            code,
        );
    }
    case(
        "a version with SQL in it",
        w.send(
            Some(&w.acme_deploy),
            delete.clone(),
            "/admin/v1/tenants/acme/functions/txn-features/versions/1.0.0'%20OR%20'1'='1",
            None,
        ),
        400,
        "invalid_version",
    );
    case(
        "a pinned version with SQL in it",
        w.send(
            Some(&w.acme_invoke),
            post.clone(),
            "/fn/acme/txn-features@1.0.0'%20OR%201=1--",
            Some(sample()),
        ),
        400,
        "invalid_version",
    );
    case(
        "a feature group with a key separator",
        w.send(
            Some(&w.acme_deploy),
            post.clone(),
            "/admin/v1/tenants/acme/features/merchant:beta",
            Some(b"[]".to_vec()),
        ),
        400,
        "invalid_name",
    );
    case(
        "a feature group naming another tenant's key",
        w.send(
            Some(&w.acme_deploy),
            post.clone(),
            "/admin/v1/tenants/acme/features/beta%00merchant",
            Some(b"[]".to_vec()),
        ),
        400,
        "invalid_name",
    );
    case(
        "a tenant name in the OIP path for another tenant",
        w.send(
            Some(&w.acme_invoke),
            post.clone(),
            "/v2/tenants/beta/models/txn-features/infer",
            Some(b"{}".to_vec()),
        ),
        404,
        "",
    );

    // /metrics: a token is needed; a tenant sees only its own series.
    case(
        "metrics without a token",
        w.send(None, get.clone(), "/metrics", None),
        401,
        "unauthorized",
    );
    let mine = w
        .send(Some(&w.acme_invoke), get.clone(), "/metrics", None)
        .text()
        .unwrap();
    assert!(mine.contains("tenant=\"acme\""), "{mine}");
    assert!(
        !mine.contains("tenant=\"beta\"") && !mine.contains("tenant=\"default\""),
        "{mine}"
    );
    let all = w
        .send(Some(&w.server.admin_token), get.clone(), "/metrics", None)
        .text()
        .unwrap();
    assert!(all.contains("tenant=\"beta\"") && all.contains("tenant=\"acme\""));

    assert!(cases >= 15, "{cases} escape cases");
    let mut w = w;
    w.server.assert_running();
    // Beta's function is untouched by all of it.
    let resp = w.send(
        Some(&w.beta_invoke),
        post,
        "/fn/beta/txn-features",
        Some(sample()),
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-quiver-version"], "1.0.0");
}

#[test]
fn public_functions_need_no_token_and_nothing_else_answers_without_one() {
    let server = Server::start();
    server.deploy_with(
        "hello-http",
        &["--name", "hello-public", "--set", "triggers.http=public"],
    );
    server.deploy("hello-http");
    let anon = server.http_as(None);
    let r = anon
        .get(format!("{}/http/default/hello-public/x", server.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().unwrap().starts_with("hello from Quiver"));
    let private = anon
        .get(format!("{}/http/default/hello-http/x", server.url))
        .send()
        .unwrap();
    let (s1, c1, m1) = error_of(private);
    let missing = anon
        .get(format!("{}/http/default/no-such/x", server.url))
        .send()
        .unwrap();
    let (s2, c2, m2) = error_of(missing);
    assert_eq!((s1, c1.as_str()), (401, "unauthorized"));
    assert_eq!(
        (s1, c1, m1),
        (s2, c2, m2),
        "a private function and a missing one look the same"
    );
}

#[test]
fn quotas_refuse_with_the_quota_named() {
    let server = Server::start();
    server.ensure_tenant("acme");
    let q = |args: &[&str]| {
        let mut a = vec!["tenants", "set-quota", "acme"];
        a.extend_from_slice(args);
        server.cli_ok(&a)
    };
    let err = server.cli_err(&["tenants", "set-quota", "ghost", "--rate", "1"]);
    assert!(err.contains("no tenant `ghost`"), "{err}");
    let err = server.cli_err(&["tenants", "set-quota", "acme", "--burst", "3"]);
    assert!(err.contains("a burst needs a rate"), "{err}");
    // Memory and CPU-time ceilings over the manifest's limits.
    q(&["--memory", "16MiB", "--cpu-time", "200ms"]);
    let err = server.cli_err(&["--tenant", "acme", "deploy", "functions/txn-features"]);
    assert!(err.contains("quota `memory` exceeded"), "{err}");
    let err = server.cli_err(&[
        "--tenant",
        "acme",
        "deploy",
        "functions/txn-features",
        "--set",
        "limits.memory=8MiB",
    ]);
    assert!(err.contains("quota `cpu_ms` exceeded"), "{err}");
    server.cli_ok(&[
        "--tenant",
        "acme",
        "deploy",
        "functions/txn-features",
        "--set",
        "limits.memory=8MiB",
        "--set",
        "limits.timeout=200ms",
    ]);
    // Function count and registry bytes.
    q(&["--max-functions", "1"]);
    let err = server.cli_err(&[
        "--tenant",
        "acme",
        "deploy",
        "functions/txn-features",
        "--name",
        "second",
        "--set",
        "limits.memory=8MiB",
        "--set",
        "limits.timeout=200ms",
    ]);
    assert!(err.contains("quota `max_functions` exceeded"), "{err}");
    q(&["--max-functions", "0", "--registry-bytes", "1KiB"]);
    let err = server.cli_err(&[
        "--tenant",
        "acme",
        "deploy",
        "functions/txn-features",
        "--version",
        "1.0.1",
        "--set",
        "limits.memory=8MiB",
        "--set",
        "limits.timeout=200ms",
    ]);
    assert!(err.contains("quota `registry_bytes` exceeded"), "{err}");
    // The quota is stored as set.
    let quota: Value = serde_json::from_str(&server.cli_ok(&["--json", "tenants", "ls"])).unwrap();
    let acme = quota["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "acme")
        .unwrap()
        .clone();
    assert_eq!(acme["quota"]["registry_bytes"], 1024, "{acme}");
    assert_eq!(
        acme["quota"].get("max_functions"),
        None,
        "0 removed it: {acme}"
    );

    // Request rate: a token bucket of 5; the 6th request at once is 429 with Retry-After.
    q(&["--rate", "2", "--burst", "5"]);
    let t = token(&server, "acme", "invoke", &[]);
    let c = server.http_as(Some(&t));
    let mut statuses = Vec::new();
    let mut retry = None;
    for _ in 0..8 {
        let r = c
            .post(format!("{}/fn/acme/txn-features", server.url))
            .body(sample())
            .send()
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let (_, code, message) = error_of(r);
            assert_eq!(code, "quota_exceeded");
            assert!(message.contains("quota `rate`"), "{message}");
        }
    }
    assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
    assert!(statuses[5..].contains(&429), "{statuses:?}");
    assert!(retry.is_some_and(|r| r.parse::<u64>().unwrap() >= 1));

    // Concurrency: one invocation at a time; a second while the first spins is 429.
    q(&[
        "--rate",
        "0",
        "--max-instances",
        "1",
        "--registry-bytes",
        "0",
        "--cpu-time",
        "0",
        "--memory",
        "0",
    ]);
    server.cli_ok(&["--tenant", "acme", "deploy", "functions/hello-http"]);
    let url = server.url.clone();
    let t2 = t.clone();
    let slow = std::thread::spawn(move || {
        let c = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        c.get(format!("{url}/http/acme/hello-http/spin/1500"))
            .bearer_auth(t2)
            .send()
            .unwrap()
            .status()
            .as_u16()
    });
    std::thread::sleep(Duration::from_millis(400));
    let r = c
        .get(format!("{}/http/acme/hello-http/x", server.url))
        .send()
        .unwrap();
    let (status, code, message) = error_of(r);
    assert_eq!(
        (status, code.as_str()),
        (429, "quota_exceeded"),
        "{message}"
    );
    assert!(message.contains("max_instances"), "{message}");
    assert_eq!(slow.join().unwrap(), 200);
    assert_eq!(
        c.get(format!("{}/http/acme/hello-http/x", server.url))
            .send()
            .unwrap()
            .status(),
        200
    );

    // A ceiling lowered after a deploy holds for what is already deployed (and
    // warm): the 1.5 s spin that passed above now stops at the new 300 ms.
    q(&["--max-instances", "0", "--cpu-time", "300ms"]);
    let started = Instant::now();
    let r = c
        .get(format!("{}/http/acme/hello-http/spin/1500", server.url))
        .send()
        .unwrap();
    let took = started.elapsed();
    let (status, code, message) = error_of(r);
    assert_eq!((status, code.as_str()), (504, "timeout"), "{message}");
    assert!(message.contains("300ms"), "{message}");
    assert!(took < Duration::from_millis(1400), "{took:?}");
}

/// Uploads that race are checked one at a time per tenant: six deploys of new
/// names at once under `max_functions = 2` make exactly two functions, and four
/// model pushes at once under a `registry_bytes` that fits one store exactly one.
#[test]
fn racing_uploads_cannot_pass_a_quota_together() {
    let mut server = Server::start();
    server.ensure_tenant("race");
    server.cli_ok(&["tenants", "set-quota", "race", "--max-functions", "2"]);
    let results: Vec<std::process::Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let server = &server;
                s.spawn(move || {
                    let name = format!("f{i}");
                    let args = ["--tenant", "race", "deploy", "functions/txn-features"];
                    server.cli(&[&args[..], &["--name", &name]].concat())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 2, "deploys that succeeded");
    for o in results.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("quota `max_functions` exceeded"), "{err}");
    }
    let ls: Value =
        serde_json::from_str(&server.cli_ok(&["--tenant", "race", "--json", "ls"])).unwrap();
    assert_eq!(ls["functions"].as_array().unwrap().len(), 2, "{ls}");

    let model = "functions/fraud-score/model/fraud.onnx";
    let size = std::fs::metadata(quiver_tests::repo().join(model))
        .unwrap()
        .len();
    server.ensure_tenant("race-models");
    let stored = (size * 3 / 2).to_string();
    server.cli_ok(&[
        "tenants",
        "set-quota",
        "race-models",
        "--registry-bytes",
        &stored,
    ]);
    let results: Vec<std::process::Output> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let server = &server;
                s.spawn(move || {
                    let name = format!("m{i}");
                    server.cli(&[
                        "--tenant",
                        "race-models",
                        "models",
                        "push",
                        model,
                        "--name",
                        &name,
                        "--version",
                        "1.0.0",
                    ])
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "model pushes that succeeded");
    for o in results.iter().filter(|o| !o.status.success()) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("quota `registry_bytes` exceeded"), "{err}");
    }
    server.assert_running();
}

/// The tenancy admin routes take small JSON bodies: malformed, mistyped, unknown
/// fields and oversized bodies are each a clear 4xx, nothing changes, and the host
/// keeps serving.
#[test]
fn tenancy_admin_routes_refuse_malformed_bodies_and_change_nothing() {
    let mut server = Server::start();
    server.ensure_tenant("acme");
    let state = |server: &Server| {
        let tenants: Value = server.get("/admin/v1/tenants").json().unwrap();
        let tokens: Value = server.get("/admin/v1/tenants/acme/tokens").json().unwrap();
        (tenants, tokens)
    };
    let before = state(&server);
    let c = server.http();
    let big = format!("{{\"name\": \"{}\"}}", "a".repeat(70 << 10));
    let mut cases = 0;
    for (method, path) in [
        (reqwest::Method::POST, "/admin/v1/tenants"),
        (reqwest::Method::PUT, "/admin/v1/tenants/acme/quota"),
        (reqwest::Method::POST, "/admin/v1/tenants/acme/grants"),
        (reqwest::Method::POST, "/admin/v1/tenants/acme/tokens"),
    ] {
        for (body, status, code) in [
            ("{", 400, "invalid_json"),
            ("[1, 2]", 400, "invalid_json"),
            ("\"just a string\"", 400, "invalid_json"),
            (r#"{"surprise": true}"#, 400, "invalid_json"),
            (
                r#"{"name": 5, "rate": "fast", "pattern": [], "scope": "root"}"#,
                400,
                "invalid_json",
            ),
            ("\u{0}\u{1}binary", 400, "invalid_json"),
            (big.as_str(), 413, "payload_too_large"),
        ] {
            // A 413 is answered before the body is read and closes its connection,
            // which a pooled client would reuse: that case gets a client of its own.
            let client = match status {
                413 => server.http(),
                _ => c.clone(),
            };
            let r = client
                .request(method.clone(), format!("{}{path}", server.url))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .unwrap();
            let (got, got_code, message) = error_of(r);
            assert_eq!(
                (got, got_code.as_str()),
                (status, code),
                "{method} {path} with {:.40}: {message}",
                body
            );
            cases += 1;
        }
    }
    assert_eq!(cases, 28);
    // The same rule on the other admin bodies: an array is not an object.
    for path in [
        "/admin/v1/tenants/acme/functions/nope/rollback",
        "/admin/v1/tenants/acme/features/merchant",
    ] {
        let r = c
            .post(format!("{}{path}", server.url))
            .body(r#"["1.0.0"]"#)
            .send()
            .unwrap();
        let (status, code, message) = error_of(r);
        assert_eq!((status, code.as_str()), (400, "invalid_json"), "{path}");
        assert!(message.contains("expected a JSON object"), "{message}");
    }
    assert_eq!(state(&server), before, "a refused body changed nothing");
    server.assert_running();
}

#[test]
fn a_flooding_tenant_does_not_slow_its_neighbour() {
    let server = Server::start();
    for t in ["noisy", "quiet"] {
        server.ensure_tenant(t);
        server.cli_ok(&["--tenant", t, "deploy", "functions/txn-features"]);
    }
    server.cli_ok(&["tenants", "set-quota", "noisy", "--rate", "50"]);
    let quiet = token(&server, "quiet", "invoke", &[]);
    let noisy = token(&server, "noisy", "invoke", &[]);
    let body = sample();
    let p50 = |n: usize| -> (Duration, usize) {
        let c = server.http_as(Some(&quiet));
        let mut times = Vec::new();
        let mut errors = 0;
        for _ in 0..n {
            let t = Instant::now();
            let r = c
                .post(format!("{}/fn/quiet/txn-features", server.url))
                .body(body.clone())
                .send()
                .unwrap();
            if r.status() != 200 {
                errors += 1;
            }
            let _ = r.bytes();
            times.push(t.elapsed());
        }
        times.sort();
        (times[n / 2], errors)
    };
    p50(50);
    let (baseline, _) = p50(300);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..2)
        .map(|_| {
            let (url, t, stop, body) = (
                server.url.clone(),
                noisy.clone(),
                stop.clone(),
                body.clone(),
            );
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::new();
                let (mut ok, mut limited) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = c
                        .post(format!("{url}/fn/noisy/txn-features"))
                        .bearer_auth(&t)
                        .body(body.clone())
                        .send()
                        .unwrap();
                    match r.status().as_u16() {
                        200 => ok += 1,
                        429 => limited += 1,
                        s => panic!("noisy got {s}"),
                    }
                }
                (ok, limited)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (flooded, errors) = p50(300);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut limited) = (0, 0);
    for f in flooders {
        let (o, l) = f.join().unwrap();
        ok += o;
        limited += l;
    }
    eprintln!("quiet p50 {baseline:?} alone, {flooded:?} while noisy flooded ({ok} served, {limited} refused 429)");
    assert_eq!(errors, 0, "the quiet tenant saw errors");
    assert!(
        limited > ok,
        "the flood was mostly refused by its rate quota: {ok} ok, {limited} limited"
    );
    assert!(
        flooded <= baseline * 2,
        "quiet p50 {flooded:?} > 2x its baseline {baseline:?}"
    );
}

#[test]
fn the_audit_log_records_admin_actions_and_detects_edits_and_deletions() {
    let server = Server::start();
    server.ensure_tenant("acme");
    server.cli_ok(&["--tenant", "acme", "deploy", "functions/txn-features"]);
    server.cli_ok(&[
        "--tenant",
        "acme",
        "deploy",
        "functions/txn-features",
        "--version",
        "1.0.1",
    ]);
    server.cli_ok(&["--tenant", "acme", "rollback", "txn-features"]);
    let t = token(&server, "acme", "deploy", &[]);
    // A refused action is recorded too.
    assert!(!server
        .cli_as(&t, &["--tenant", "acme", "tokens", "create"])
        .status
        .success());
    server.cli_ok(&["tenants", "set-quota", "acme", "--rate", "100"]);

    let log: Value = serde_json::from_str(&server.cli_ok(&["--json", "audit", "--all"])).unwrap();
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "tenants.create",
            "deploy",
            "deploy",
            "rollback",
            "tokens.create",
            "tokens.create",
            "tenants.set-quota"
        ],
        "{log}"
    );
    assert!(
        entries[1]["target"]
            .as_str()
            .unwrap()
            .contains("txn-features@1.0.0 sha256:"),
        "{log}"
    );
    assert_eq!(entries[5]["result"], "refused 403");
    assert!(entries[5]["actor"].as_str().unwrap().starts_with("acme:"));
    assert!(entries[0]["actor"]
        .as_str()
        .unwrap()
        .starts_with("platform:"));
    let verified = server.cli_ok(&["audit", "verify"]);
    assert!(verified.starts_with("ok: 7 entries"), "{verified}");
    // The tenant's own admin sees its entries (not the platform's tenant creation).
    let admin = token(&server, "acme", "admin", &[]);
    let mine: Value = serde_json::from_str(&String::from_utf8_lossy(
        &server
            .cli_as(&admin, &["--tenant", "acme", "--json", "audit"])
            .stdout,
    ))
    .unwrap();
    assert!(mine["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["tenant"] == "acme"));

    let db = rusqlite::Connection::open(server.data_dir.join("tenancy.db")).unwrap();
    db.execute("UPDATE audit SET result = 'refused 500' WHERE seq = 4", [])
        .unwrap();
    let out = server.cli(&["audit", "verify"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("BROKEN at entry 4") && text.contains("edited"),
        "{text}"
    );
    db.execute("UPDATE audit SET result = 'ok' WHERE seq = 4", [])
        .unwrap();
    assert!(server.cli_ok(&["audit", "verify"]).starts_with("ok"));
    db.execute("DELETE FROM audit WHERE seq = 3", []).unwrap();
    let out = server.cli(&["audit", "verify"]);
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("BROKEN at entry 4") && text.contains("entry 3 is missing"),
        "{text}"
    );
}

#[test]
fn usage_is_metered_per_tenant() {
    let server = Server::start();
    server.ensure_tenant("acme");
    server.cli_ok(&["--tenant", "acme", "deploy", "functions/txn-features"]);
    for _ in 0..5 {
        assert_eq!(
            server
                .post("/fn/acme/txn-features", "application/json", sample())
                .status(),
            200
        );
    }
    let u: Value =
        serde_json::from_str(&server.cli_ok(&["--tenant", "acme", "--json", "usage"])).unwrap();
    assert_eq!(u["usage"]["invocations"], 5, "{u}");
    assert!(u["usage"]["cpu_ms"].as_f64().unwrap() > 0.0, "{u}");
    assert!(
        u["usage"]["memory_gb_seconds"].as_f64().unwrap() > 0.0,
        "{u}"
    );
    assert!(u["registry_bytes"].as_u64().unwrap() > 10_000, "{u}");
    let other: Value = serde_json::from_str(&server.cli_ok(&["--json", "usage"])).unwrap();
    assert_eq!(
        other["usage"]["invocations"], 0,
        "the default tenant used nothing: {other}"
    );
    let metric = server.metric("quiver_tenant_usage{measure=\"invocations\",tenant=\"acme\"}");
    assert_eq!(metric, Some(5.0));
}

/// Usage is saved in the data dir: when the server stops (SIGTERM) and every
/// `--usage-save-interval` (so a crash loses at most one interval).
#[test]
fn usage_outlives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let invocations = |server: &Server| -> Value {
        let u: Value =
            serde_json::from_str(&server.cli_ok(&["--tenant", "acme", "--json", "usage"])).unwrap();
        u["usage"]["invocations"].clone()
    };
    let call = |server: &Server, n: usize| {
        for _ in 0..n {
            let r = server.post("/fn/acme/txn-features", "application/json", sample());
            assert_eq!(r.status(), 200);
        }
    };
    let mut server = Server::start_in(dir.path());
    server.ensure_tenant("acme");
    server.cli_ok(&["--tenant", "acme", "deploy", "functions/txn-features"]);
    call(&server, 3);
    server.terminate();
    let mut server = Server::start_in_with(dir.path(), &["--usage-save-interval", "100ms"]);
    assert_eq!(invocations(&server), 3, "saved at SIGTERM");
    call(&server, 2);
    std::thread::sleep(Duration::from_millis(600));
    server.kill();
    let server = Server::start_in(dir.path());
    assert_eq!(
        invocations(&server),
        5,
        "saved by the interval before SIGKILL"
    );
}

#[test]
fn the_first_start_writes_an_owner_only_admin_token_once() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start_in(dir.path());
    let token = first.admin_token.clone();
    let mode = std::fs::metadata(dir.path().join("admin-token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(first);
    let again = Server::start_in(dir.path());
    assert_eq!(
        again.admin_token, token,
        "a restart makes no new admin token"
    );
    assert_eq!(
        again
            .http()
            .get(format!("{}/admin/v1/tenants", again.url))
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn tls_serves_the_same_api_over_https() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=quiver-test",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let server = Server::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let curl = |extra: &[&str], path: &str| {
        quiver_tests::curl_status(extra, &format!("{}{path}", server.url))
    };
    let auth = format!("Authorization: Bearer {}", server.admin_token);
    let status = curl(
        &["--cacert", cert.to_str().unwrap(), "-H", &auth],
        "/admin/v1/tenants",
    );
    assert_eq!(status, 200);
    let status = curl(&["--cacert", cert.to_str().unwrap()], "/admin/v1/tenants");
    assert_eq!(status, 401, "no token over TLS either");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = server.url.replace("https://", "http://");
    assert_ne!(
        quiver_tests::curl_status(&[], &format!("{plain}/healthz")),
        200
    );
}

/// A loopback HTTP server that answers 200 and counts connections.
fn loopback_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut conn = conn;
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (port, hits)
}

#[test]
fn guests_reach_no_file_env_socket_or_host_they_were_not_granted() {
    use std::sync::atomic::Ordering;
    let server = Server::start();
    let (port, hits) = loopback_server();
    server.deploy("chaos");
    let run = |mode: &str| -> Value {
        let body = json!([{ "mode": mode, "target": format!("127.0.0.1:{port}") }]).to_string();
        let r = server.post("/fn/default/chaos", "application/json", body);
        assert_eq!(r.status(), 200, "{mode}");
        r.json::<Value>().unwrap()["rows"][0].clone()
    };
    let file = run("read-file");
    assert!(
        file["outcome"].as_str().unwrap().starts_with("denied"),
        "filesystem: {file}"
    );
    assert_eq!(run("env")["vars"], 0, "environment");
    let socket = run("socket");
    assert!(
        socket["outcome"].as_str().unwrap().starts_with("denied"),
        "socket: {socket}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the socket never connected");

    // Outbound HTTP from a component that imports the whole proxy world.
    server.ensure_tenant("acme");
    server.cli_ok(&["--tenant", "acme", "deploy", "functions/hello-http"]);
    let fetch = |path: &str| server.get(path).text().unwrap();
    let denied = fetch(&format!("/http/acme/hello-http/fetch/127.0.0.1:{port}"));
    assert!(
        denied.contains("refused") && denied.contains("HttpRequestDenied"),
        "{denied}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a denied request never reached the network"
    );
    let target = format!("http://127.0.0.1:{port}");
    let set = format!("capabilities.outbound=[\"{target}\"]");
    let err = server.cli_err(&[
        "--tenant",
        "acme",
        "deploy",
        "functions/hello-http",
        "--version",
        "1.2.1",
        "--set",
        &set,
    ]);
    assert!(
        err.contains("capability_denied") && err.contains("not within"),
        "{err}"
    );
    server.cli_ok(&["tenants", "grant", "acme", "outbound", &target]);
    server.cli_ok(&[
        "--tenant",
        "acme",
        "deploy",
        "functions/hello-http",
        "--version",
        "1.2.1",
        "--set",
        &set,
    ]);
    let fetched = fetch(&format!("/http/acme/hello-http/fetch/127.0.0.1:{port}"));
    assert_eq!(fetched.trim(), "fetched 200", "{fetched}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Another port on the same host is still denied.
    let other = fetch("/http/acme/hello-http/fetch/127.0.0.1:9");
    assert!(other.contains("HttpRequestDenied"), "{other}");
    let u: Value =
        serde_json::from_str(&server.cli_ok(&["--tenant", "acme", "--json", "usage"])).unwrap();
    assert_eq!(u["usage"]["egress_calls"], 1, "{u}");
    assert_eq!(u["usage"]["egress_denied"], 2, "{u}");
}

/// Compiled code is per tenant: a tenant deploying bytes another tenant already
/// deployed compiles them again (so the time a deploy or cold start takes says
/// nothing about other tenants' uploads), while its own redeploys and restarts reuse
/// its artifacts.
#[test]
fn compiled_code_is_not_shared_across_tenants() {
    let server = Server::start();
    let compilations = || server.metric("quiver_compilations_total").unwrap_or(0.0);
    server.ensure_tenant("acme");
    server.ensure_tenant("beta");
    server.cli_ok(&["--tenant", "acme", "deploy", "functions/txn-features"]);
    let after_acme = compilations();
    assert!(after_acme >= 1.0);
    server.cli_ok(&["--tenant", "beta", "deploy", "functions/txn-features"]);
    assert_eq!(
        compilations(),
        after_acme + 1.0,
        "beta compiled its own copy"
    );
    let beta = token(&server, "beta", "invoke", &[]);
    let r = server
        .http_as(Some(&beta))
        .post(format!("{}/fn/beta/txn-features", server.url))
        .body(sample())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        compilations(),
        after_acme + 1.0,
        "beta's cold start used beta's artifact"
    );
    let aot: Vec<String> = std::fs::read_dir(server.data_dir.join("aot"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        aot.iter().any(|n| n.contains(".acme-")) && aot.iter().any(|n| n.contains(".beta-")),
        "{aot:?}"
    );
}
