//! `quiver_ml::drift` against the numbers Evidently 0.7.23 and SciPy 1.14.1
//! computed for the same inputs (`tests/data/drift_reference.json`, written by
//! `tests/drift_reference.py`).
//!
//! Tolerance: PSI, Jensen–Shannon and the KS statistic must agree to 1e-9
//! absolute. P-values and survival functions must agree to 1e-9 *relative*
//! (`|got − want| <= 1e-9 · |want|`, with both exactly 0 accepted), which is the
//! stricter reading for the tiny p-values (1e-120 here) and the same as absolute
//! near 1.

use quiver_ml::drift::{self, KsMethod, Reference, Window};
use serde_json::Value;

const TOL: f64 = 1e-9;

fn data() -> Value {
    let text = include_str!("data/drift_reference.json");
    serde_json::from_str(text).expect("reference JSON parses")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn counts(v: &Value) -> Vec<(String, u64)> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().expect("category").to_owned(),
                pair[1].as_u64().expect("count"),
            )
        })
        .collect()
}

fn expand(c: &[(String, u64)]) -> Vec<String> {
    c.iter()
        .flat_map(|(k, n)| std::iter::repeat_n(k.clone(), *n as usize))
        .collect()
}

fn close_abs(got: f64, want: f64) -> bool {
    (got - want).abs() <= TOL
}

fn close_rel(got: f64, want: f64) -> bool {
    got == want || (got - want).abs() <= TOL * want.abs()
}

fn rel_err(got: f64, want: f64) -> f64 {
    if got == want {
        0.0
    } else {
        (got - want).abs() / want.abs()
    }
}

#[test]
fn datasets_match_evidently_and_scipy() {
    let data = data();
    let mut failures = Vec::new();
    let mut checked = 0;
    // Largest deviations seen (printed with `--nocapture`).
    let (mut worst_abs, mut worst_p) = (0.0f64, 0.0f64);
    for case in data["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let want_psi = case["psi"].as_f64().expect("psi");
        let want_js = case["js"].as_f64().expect("js");
        let (psi, js) = match case["kind"].as_str() {
            Some("numerical") => {
                let r = floats(&case["reference"]);
                let c = floats(&case["current"]);
                let bins = case["bins"].as_u64().expect("bins") as usize;
                let shares = drift::binned_shares(&r, &c, true).expect("binned");
                if shares.reference.len() != bins {
                    failures.push(format!(
                        "{name}: {} bins, want {bins}",
                        shares.reference.len()
                    ));
                }
                let ks = drift::ks_2samp(&r, &c).expect("ks");
                let want_d = case["ks_statistic"].as_f64().expect("d");
                let want_p = case["ks_pvalue"].as_f64().expect("p");
                let exact = case["ks_exact"].as_bool().expect("exact");
                if !close_abs(ks.statistic, want_d) {
                    failures.push(format!("{name}: KS D {} want {want_d}", ks.statistic));
                }
                worst_abs = worst_abs.max((ks.statistic - want_d).abs());
                worst_p = worst_p.max(rel_err(ks.p_value, want_p));
                if !close_rel(ks.p_value, want_p) {
                    failures.push(format!("{name}: KS p {:e} want {want_p:e}", ks.p_value));
                }
                if (ks.method == KsMethod::Exact) != exact {
                    failures.push(format!("{name}: KS method {:?}", ks.method));
                }
                // The window and the reference give the same numbers.
                let reference = Reference::from_values(r.clone()).expect("reference");
                let mut window = Window::new(c.len()).expect("window");
                window.extend(&c).expect("push");
                let report = window.evaluate(&reference).expect("evaluate");
                let wks = report.ks.expect("ks");
                if report.psi.to_bits() != drift::psi(&r, &c).expect("psi").to_bits()
                    || wks != ks
                    || report.ks_drift() != (want_p <= 0.05)
                {
                    failures.push(format!("{name}: window differs from the functions"));
                }
                (
                    drift::psi(&r, &c).expect("psi"),
                    drift::jensen_shannon(&r, &c).expect("js"),
                )
            }
            Some("categorical") => {
                let rc = counts(&case["reference_counts"]);
                let cc = counts(&case["current_counts"]);
                let (r, c) = (expand(&rc), expand(&cc));
                let reference = Reference::from_category_counts(rc.clone()).expect("reference");
                let mut window = drift::CategoricalWindow::new(c.len()).expect("window");
                for v in &c {
                    window.push(v);
                }
                let report = window.evaluate(&reference).expect("evaluate");
                let psi = drift::psi_categorical(&r, &c).expect("psi");
                let js = drift::jensen_shannon_categorical(&r, &c).expect("js");
                if !close_abs(report.psi, psi) || !close_abs(report.jensen_shannon, js) {
                    failures.push(format!("{name}: window differs from the functions"));
                }
                (psi, js)
            }
            other => panic!("unknown kind {other:?}"),
        };
        worst_abs = worst_abs
            .max((psi - want_psi).abs())
            .max((js - want_js).abs());
        if !close_abs(psi, want_psi) {
            failures.push(format!("{name}: PSI {psi} want {want_psi}"));
        }
        if !close_abs(js, want_js) {
            failures.push(format!("{name}: JS {js} want {want_js}"));
        }
        if drift::psi_drifted(psi, drift::PSI_THRESHOLD) != case["psi_drift"].as_bool().expect("b")
        {
            failures.push(format!("{name}: PSI drift decision"));
        }
        if drift::jensen_shannon_drifted(js, drift::JENSEN_SHANNON_THRESHOLD)
            != case["js_drift"].as_bool().expect("b")
        {
            failures.push(format!("{name}: JS drift decision"));
        }
        checked += 1;
    }
    println!("{checked} cases; largest |Δ| of PSI/JS/D {worst_abs:e}, largest relative Δ of p {worst_p:e}");
    assert!(checked >= 20, "only {checked} cases");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Each row of grid `key` against SciPy's value (relative error, to 1e-9):
/// `eval` gives what was computed, what SciPy gave and a label.
fn check_grid(key: &str, eval: impl Fn(&Value) -> (f64, f64, String)) {
    let data = data();
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    for row in data[key].as_array().expect("grid") {
        let (got, want, what) = eval(row);
        worst = worst.max(rel_err(got, want));
        if !close_rel(got, want) {
            failures.push(format!("{what} = {got:e}, want {want:e}"));
        }
    }
    println!("{key}: largest relative Δ {worst:e}");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn kstwo_sf_matches_scipy() {
    check_grid("kstwo_sf", |row| {
        let n = row[0].as_f64().expect("n");
        let d = row[1].as_f64().expect("d");
        let want = row[2].as_f64().expect("sf");
        (drift::kstwo_sf(d, n), want, format!("kstwo.sf({d}, {n})"))
    });
}

#[test]
fn smirnov_matches_scipy() {
    check_grid("smirnov", |row| {
        let n = row[0].as_u64().expect("n");
        let x = row[1].as_f64().expect("x");
        let want = row[2].as_f64().expect("sf");
        (drift::smirnov(n, x), want, format!("smirnov({n}, {x})"))
    });
}

#[test]
fn exact_ks_probability_matches_scipy() {
    let data = data();
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    for row in data["ks_exact"].as_array().expect("grid") {
        let n1 = row[0].as_u64().expect("n1") as usize;
        let n2 = row[1].as_u64().expect("n2") as usize;
        let d = row[2].as_f64().expect("d");
        let ok = row[3].as_bool().expect("ok");
        let want_d = row[4].as_f64().expect("d_out");
        match (drift::ks_exact_probability(n1, n2, d), ok) {
            (Some((got_d, got_p)), true) => {
                let want_p = row[5].as_f64().expect("p");
                worst = worst.max(rel_err(got_p, want_p));
                if got_d != want_d || !close_rel(got_p, want_p) {
                    failures.push(format!(
                        "exact({n1}, {n2}, {d}) = ({got_d}, {got_p:e}), want ({want_d}, {want_p:e})"
                    ));
                }
            }
            (None, false) => {}
            (got, _) => failures.push(format!("exact({n1}, {n2}, {d}) = {got:?}, want ok={ok}")),
        }
    }
    println!("exact KS: largest relative Δ {worst:e}");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
