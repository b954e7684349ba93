//! Signed artifacts end to end: `quiver keys`, `quiver deploy --sign`, a tenant's
//! trusted signers (`quiver tenants grant T signer KEY`), refusals at deploy and at
//! pull (a cold load, after a policy change or a restart over a tampered index), and
//! OpenSSL as a second signer (its keys and its raw signatures both work).

use quiver_tests::{built_component, error_of, repo, Server};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

fn keys(server: &Server, args: &[&str]) -> String {
    let mut all = vec!["keys"];
    all.extend_from_slice(args);
    server.cli_ok(&all).trim().to_string()
}

fn deploy(server: &Server, version: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "--tenant",
        "acme",
        "--json",
        "deploy",
        "functions/txn-features",
        "--version",
        version,
    ];
    args.extend_from_slice(extra);
    server.cli(&args)
}

fn deployed(server: &Server, version: &str, extra: &[&str]) -> Value {
    let out = deploy(server, version, extra);
    assert!(
        out.status.success(),
        "deploy {version} {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("deploy --json")
}

fn refused(server: &Server, version: &str, extra: &[&str]) -> String {
    let out = deploy(server, version, extra);
    assert!(
        !out.status.success(),
        "deploy {version} {extra:?} should fail"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn invoke(server: &Server, function: &str) -> reqwest::blocking::Response {
    server
        .http()
        .post(format!("{}/fn/acme/{function}", server.url))
        .header("content-type", "application/json")
        .body(quiver_tests::txns(&[4.5]))
        .send()
        .expect("invoke")
}

fn assert_served(server: &Server, function: &str, version: &str) {
    let resp = invoke(server, function);
    assert_eq!(resp.status(), 200, "{function}");
    let served = resp
        .headers()
        .get("x-quiver-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert_eq!(served.as_deref(), Some(version), "{function}");
}

fn assert_refused_at_pull(server: &Server, function: &str, why: &str) {
    let (status, code, message) = error_of(invoke(server, function));
    assert_eq!(
        (status, code.as_str()),
        (403, "signature_required"),
        "{message}"
    );
    assert!(message.contains(why), "{function}: {message}");
}

/// A deploy through the admin API with a hand-made `signature` part.
fn deploy_signed_raw(
    server: &Server,
    version: &str,
    signature: &str,
) -> reqwest::blocking::Response {
    let manifest = std::fs::read_to_string(repo().join("functions/txn-features/quiver.toml"))
        .expect("manifest")
        .replace("version = \"1.0.0\"", &format!("version = \"{version}\""));
    let form = reqwest::blocking::multipart::Form::new()
        .text("manifest", manifest)
        .part(
            "component",
            reqwest::blocking::multipart::Part::bytes(built_component("txn-features")),
        )
        .text("signature", signature.to_string());
    server
        .http()
        .post(format!("{}/admin/v1/tenants/acme/functions", server.url))
        .multipart(form)
        .send()
        .expect("deploy request")
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha256_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn keys_are_made_shown_and_never_overwritten() {
    let server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("k.pem");
    let path = path.to_str().expect("utf-8 path");
    let public = keys(&server, &["generate", path]);
    assert!(
        public.starts_with("ed25519:") && public.len() == 8 + 64,
        "{public}"
    );
    assert_eq!(keys(&server, &["public", path]), public);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "a private key is its owner's only");
    }
    let before = std::fs::read(path).expect("key");
    let err = server.cli_err(&["keys", "generate", path]);
    assert!(err.contains("creating"), "{err}");
    assert_eq!(std::fs::read(path).expect("key"), before, "not overwritten");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").expect("write");
    let err = server.cli_err(&["keys", "public", junk.to_str().expect("utf-8")]);
    assert!(err.contains("not a PEM private key"), "{err}");
    let big = dir.path().join("big.pem");
    std::fs::write(&big, vec![b'a'; 10_000]).expect("write");
    let err = server.cli_err(&["keys", "public", big.to_str().expect("utf-8")]);
    assert!(err.contains("not an ed25519 key"), "{err}");
    // OpenSSL's own key file loads, and names the public key OpenSSL derives.
    let ossl = dir.path().join("ossl.pem");
    let ossl = ossl.to_str().expect("utf-8");
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", ossl]);
    let der = openssl(&["pkey", "-in", ossl, "-pubout", "-outform", "DER"]);
    let raw = &der[der.len() - 32..];
    assert_eq!(
        keys(&server, &["public", ossl]),
        format!("ed25519:{}", hex(raw))
    );
}

#[test]
fn a_tenant_that_trusts_signers_runs_only_what_they_signed() {
    let mut server = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_string();
    let (k1, k2, k3) = (key("k1.pem"), key("k2.pem"), key("k3.pem"));
    let pub1 = keys(&server, &["generate", &k1]);
    let pub2 = keys(&server, &["generate", &k2]);
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", &k3]);
    let pub3 = keys(&server, &["public", &k3]);
    server.cli_ok(&["tenants", "create", "acme"]);
    server.cli_ok(&["tenants", "create", "beta"]);

    // No signer trusted: anything deploys, signed or not.
    deployed(&server, "1.0.0", &[]);
    assert_served(&server, "txn-features", "1.0.0");

    // Trusting a key applies to what is loaded too: the next call pulls again and
    // is refused, with the reason.
    let out = server.cli_ok(&["tenants", "grant", "acme", "signer", &pub1]);
    assert!(out.contains(&pub1), "{out}");
    let ls = server.cli_ok(&["--json", "tenants", "ls"]);
    let ls: Value = serde_json::from_str(&ls).expect("tenants ls --json");
    let acme = ls["tenants"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "acme"))
        .expect("acme listed");
    assert_eq!(acme["signers"], json!([pub1]));
    assert_refused_at_pull(&server, "txn-features", "is not signed");
    let err = server.cli_err(&["tenants", "grant", "acme", "signer", "ed25519:00"]);
    assert!(err.contains("not an ed25519 public key"), "{err}");

    // At deploy: unsigned, signed by a key acme does not trust, then by one it does.
    let err = refused(&server, "1.1.0", &[]);
    assert!(
        err.contains("is not signed") && err.contains("1 trusted"),
        "{err}"
    );
    let err = refused(&server, "1.1.0", &["--sign", &k2]);
    assert!(
        err.contains(&format!("{pub2} is not trusted by tenant `acme`")),
        "{err}"
    );
    let signed = deployed(&server, "1.1.0", &["--sign", &k1]);
    assert_served(&server, "txn-features", "1.1.0");
    assert_served(&server, "txn-features@1.1.0", "1.1.0");
    // 1.0.0 is the same bytes: a signature is of a digest, so k1's covers it too.
    assert_served(&server, "txn-features@1.0.0", "1.0.0");
    // A tenant that trusts nobody is not touched by acme's policy.
    let beta = server.cli(&["--tenant", "beta", "deploy", "functions/txn-features"]);
    assert!(
        beta.status.success(),
        "{}",
        String::from_utf8_lossy(&beta.stderr)
    );

    // A signature that does not verify is refused whoever trusts what, and nothing
    // is stored: a well-formed one over other bytes, one by another key, and junk.
    let digest = signed["digest"].as_str().expect("digest").to_string();
    let sig_json = |key: &str, sig: &str| json!({ "key": key, "signature": sig }).to_string();
    let other_bytes_sig = {
        let msg = dir.path().join("other.txt");
        std::fs::write(&msg, sha256_of(b"other bytes")).expect("write");
        hex(&openssl(&[
            "pkeyutl",
            "-sign",
            "-inkey",
            &k3,
            "-rawin",
            "-in",
            msg.to_str().expect("utf-8"),
        ]))
    };
    for (part, why) in [
        (sig_json(&pub3, &other_bytes_sig), "does not verify"),
        (sig_json(&pub1, &other_bytes_sig), "does not verify"),
        (sig_json(&pub1, "00"), "128 hex"),
        (
            sig_json("ed25519:xyz", &other_bytes_sig),
            "not an ed25519 public key",
        ),
        ("{\"key\": 1}".to_string(), "is not {"),
        ("x".repeat(2000), "over its 1024-byte limit"),
    ] {
        let (status, code, message) = error_of(deploy_signed_raw(&server, "1.2.0", &part));
        assert!(
            matches!((status, code.as_str()), (400, "bad_signature") | (413, _)),
            "{status} {code}: {message}"
        );
        assert!(message.contains(why), "{part}: {message}");
    }
    let versions = server.cli_ok(&["--tenant", "acme", "versions", "txn-features"]);
    assert!(!versions.contains("1.2.0"), "{versions}");

    // OpenSSL as the signer: trust its key, sign the digest text with `pkeyutl`, and
    // send the raw signature; the host verifies it like its own.
    server.cli_ok(&["tenants", "grant", "acme", "signer", &pub3]);
    let component = built_component("txn-features");
    assert_eq!(sha256_of(&component), digest, "the CLI signed what it sent");
    let msg = dir.path().join("digest.txt");
    std::fs::write(&msg, &digest).expect("write");
    let sig = hex(&openssl(&[
        "pkeyutl",
        "-sign",
        "-inkey",
        &k3,
        "-rawin",
        "-in",
        msg.to_str().expect("utf-8"),
    ]));
    let resp = deploy_signed_raw(&server, "1.2.0", &sig_json(&pub3, &sig));
    assert_eq!(resp.status(), 201, "{:?}", resp.text());
    assert_served(&server, "txn-features@1.2.0", "1.2.0");

    // The same bytes now carry two signatures (k1's from 1.1.0, k3's from 1.2.0):
    // no longer trusting k3 leaves k1's; no longer trusting k1 too refuses them.
    server.cli_ok(&["tenants", "revoke", "acme", "signer", &pub3]);
    assert_served(&server, "txn-features@1.2.0", "1.2.0");
    let err = server.cli_err(&["tenants", "revoke", "acme", "signer", &pub3]);
    assert!(err.contains("does not trust"), "{err}");
    let err = server.cli_err(&["tenants", "revoke", "acme", "outbound", "https://x.example"]);
    assert!(err.contains("not revocable"), "{err}");
    server.cli_ok(&["tenants", "grant", "acme", "signer", &pub2]);
    server.cli_ok(&["tenants", "revoke", "acme", "signer", &pub1]);
    assert_refused_at_pull(
        &server,
        "txn-features@1.1.0",
        &format!("{pub1} is not trusted"),
    );
    server.cli_ok(&["tenants", "grant", "acme", "signer", &pub1]);
    assert_served(&server, "txn-features@1.1.0", "1.1.0");

    // The index is not trusted more than the bytes: a signature changed on disk
    // while the host was down is refused at the first pull after the restart.
    server.terminate();
    tamper_signatures(&server.data_dir, &digest);
    let server = Server::start_in(&server.data_dir);
    assert_refused_at_pull(&server, "txn-features@1.1.0", "does not verify");
    // Signing the same version again (an unchanged deploy) replaces the signature.
    let again = deployed(&server, "1.1.0", &["--sign", &k1]);
    assert_eq!(again["unchanged"], true);
    assert_served(&server, "txn-features@1.1.0", "1.1.0");
}

/// Flip one hex digit of every signature of `digest` in the registry's index.
fn tamper_signatures(data_dir: &Path, digest: &str) {
    let db = rusqlite::Connection::open(data_dir.join("registry/index.sqlite3")).expect("index");
    let n = db
        .execute(
            "UPDATE signatures SET signature =
                 (CASE substr(signature, 1, 1) WHEN '0' THEN '1' ELSE '0' END) || substr(signature, 2)
             WHERE digest = ?1",
            [digest],
        )
        .expect("tamper");
    assert_eq!(n, 2, "k1's and k3's signatures of {digest}");
}
