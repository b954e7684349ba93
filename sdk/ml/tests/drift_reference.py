"""Reference numbers for `quiver_ml::drift`, computed by the libraries it matches.

Writes `sdk/ml/tests/data/drift_reference.json`, which `tests/drift_reference.rs`
reads: fixed datasets (inputs included) with the PSI and Jensen-Shannon distance
that Evidently computes and the two-sample Kolmogorov-Smirnov statistic and
p-value that SciPy computes, plus grids of SciPy's `kstwo.sf`,
`special.smirnov` and the exact two-sample KS probability.

Pinned versions (the script refuses to run with others):

    evidently==0.7.23  scipy==1.14.1  numpy==2.2.6  pandas==2.2.3

(pandas is pinned below 3 because Evidently 0.7.23 does not import with
pandas 3). To regenerate:

    python3 -m venv /tmp/pyref
    /tmp/pyref/bin/pip install evidently==0.7.23 scipy==1.14.1 numpy==2.2.6 pandas==2.2.3
    /tmp/pyref/bin/python sdk/ml/tests/drift_reference.py

Every dataset is drawn from `numpy.random.default_rng(seed)` and rounded to a
few significant digits *before* anything is computed, so the stored inputs are
exactly the values the expected numbers were computed from (JSON floats are
written with `repr`, which round-trips). Nothing here reimplements the
statistics: PSI and JS come from Evidently's registered stat tests
(`psi_stat_test`, `jensenshannon_stat_test`, which call `get_binned_data`),
KS from `scipy.stats.ks_2samp` with its defaults.
"""

import json
import math
import sys
from pathlib import Path

import evidently
import numpy as np
import pandas as pd
import scipy
from evidently.legacy.calculations.stattests import jensenshannon_stat_test, psi_stat_test
from evidently.legacy.calculations.stattests.utils import get_binned_data
from evidently.legacy.core import ColumnType
from scipy import special, stats
from scipy.stats._stats_py import _attempt_exact_2kssamp

PINNED = {"evidently": "0.7.23", "scipy": "1.14.1", "numpy": "2.2.6", "pandas": "2.2.3"}
FOUND = {
    "evidently": evidently.__version__,
    "scipy": scipy.__version__,
    "numpy": np.__version__,
    "pandas": pd.__version__,
}
if FOUND != PINNED:
    sys.exit(f"pinned versions {PINNED}, found {FOUND}")

OUT = Path(__file__).resolve().parent / "data" / "drift_reference.json"


def rounded(values, sig):
    """Round to `sig` significant digits, as Python floats."""
    return [float(f"{v:.{sig}g}") for v in np.asarray(values, dtype=np.float64)]


def numerical_case(name, reference, current):
    ref = pd.Series(np.asarray(reference, dtype=np.float64))
    cur = pd.Series(np.asarray(current, dtype=np.float64))
    psi = psi_stat_test(ref, cur, ColumnType.Numerical, None)
    js = jensenshannon_stat_test(ref, cur, ColumnType.Numerical, None)
    ks = stats.ks_2samp(ref.to_numpy(), cur.to_numpy())
    bins = len(get_binned_data(ref, cur, ColumnType.Numerical, 30)[0])
    return {
        "name": name,
        "kind": "numerical",
        "reference": [float(v) for v in reference],
        "current": [float(v) for v in current],
        "reference_nunique": int(ref.nunique()),
        "bins": bins,
        "psi": float(psi.drift_score),
        "psi_drift": bool(psi.drifted),
        "js": float(js.drift_score),
        "js_drift": bool(js.drifted),
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
        "ks_exact": max(len(reference), len(current)) <= 10000,
    }


def categorical_case(name, reference_counts, current_counts, seed):
    """Categorical data stored as (category, count) pairs; the Series are the
    categories repeated and shuffled (order changes none of the statistics)."""
    rng = np.random.default_rng(seed)

    def series(counts):
        values = [cat for cat, count in counts for _ in range(count)]
        return pd.Series(rng.permutation(np.array(values, dtype=object)))

    ref, cur = series(reference_counts), series(current_counts)
    psi = psi_stat_test(ref, cur, ColumnType.Categorical, None)
    js = jensenshannon_stat_test(ref, cur, ColumnType.Categorical, None)
    return {
        "name": name,
        "kind": "categorical",
        "reference_counts": [[c, n] for c, n in reference_counts],
        "current_counts": [[c, n] for c, n in current_counts],
        "psi": float(psi.drift_score),
        "psi_drift": bool(psi.drifted),
        "js": float(js.drift_score),
        "js_drift": bool(js.drifted),
    }


def datasets():
    cases = []
    rng = np.random.default_rng(7)
    cases.append(numerical_case("tiny_7_vs_9", rounded(rng.normal(0, 1, 7), 6), rounded(rng.normal(0.5, 1, 9), 6)))
    rng = np.random.default_rng(50)
    cases.append(numerical_case("equal_50_shift", rounded(rng.normal(0, 1, 50), 6), rounded(rng.normal(0.3, 1, 50), 6)))
    rng = np.random.default_rng(51)
    cases.append(numerical_case("equal_50_same", rounded(rng.normal(0, 1, 50), 6), rounded(rng.normal(0, 1, 50), 6)))
    rng = np.random.default_rng(1000)
    cases.append(numerical_case("medium_1000_vs_800", rounded(rng.normal(0, 1, 1000), 6), rounded(rng.normal(0.1, 1.1, 800), 6)))
    rng = np.random.default_rng(1001)
    cases.append(numerical_case("medium_1000_vs_1000_same", rounded(rng.normal(5, 2, 1000), 6), rounded(rng.normal(5, 2, 1000), 6)))
    rng = np.random.default_rng(1002)
    cases.append(numerical_case("medium_600_vs_900_big_shift", rounded(rng.normal(0, 1, 600), 6), rounded(rng.normal(1.5, 1, 900), 6)))
    rng = np.random.default_rng(5000)
    cases.append(numerical_case("exact_5000_vs_5000", rounded(rng.normal(0, 1, 5000), 5), rounded(rng.normal(0.05, 1, 5000), 5)))
    rng = np.random.default_rng(10000)
    cases.append(numerical_case("exact_10000_vs_7000", rounded(rng.normal(0, 1, 10000), 5), rounded(rng.normal(0.03, 1, 7000), 5)))
    # Above 10,000: the asymptotic path (kstwo.sf with n = round(m*n/(m+n))).
    rng = np.random.default_rng(12000)
    cases.append(numerical_case("asymp_12000_vs_11000_shift", rounded(rng.normal(0, 1, 12000), 5), rounded(rng.normal(0.04, 1, 11000), 5)))
    rng = np.random.default_rng(12001)
    cases.append(numerical_case("asymp_10500_vs_10200_same", rounded(rng.normal(0, 1, 10500), 5), rounded(rng.normal(0, 1, 10200), 5)))
    rng = np.random.default_rng(12002)
    cases.append(numerical_case("asymp_10001_vs_120", rounded(rng.normal(0, 1, 10001), 5), rounded(rng.normal(0.1, 1, 120), 5)))
    rng = np.random.default_rng(12003)
    cases.append(numerical_case("asymp_10001_vs_60_shift", rounded(rng.normal(0, 1, 10001), 5), rounded(rng.normal(0.8, 1, 60), 5)))
    # Integer-valued, at most 20 distinct values: one bin per value; the current
    # has values the reference lacks (zero-share replacement).
    rng = np.random.default_rng(20)
    cases.append(numerical_case("integers_discrete", [float(v) for v in rng.integers(0, 10, 500)], [float(v) for v in rng.integers(0, 12, 400)]))
    # Exactly 20 distinct reference values (still discrete) and exactly 21 (histogram).
    rng = np.random.default_rng(21)
    cases.append(numerical_case("twenty_distinct", [float(v) for v in rng.integers(0, 20, 300)] + [float(v) for v in range(20)], [float(v) for v in rng.integers(3, 25, 250)]))
    rng = np.random.default_rng(22)
    cases.append(numerical_case("twentyone_distinct", [float(v) for v in rng.integers(0, 21, 300)] + [float(v) for v in range(21)], [float(v) for v in rng.integers(3, 25, 250)]))
    # Histogram bins empty on one side (replacement 0.0001).
    rng = np.random.default_rng(30)
    cases.append(numerical_case("zero_share_bins", rounded(rng.normal(0, 1, 200), 6), rounded(rng.normal(4, 0.5, 150), 6)))
    # Many ties: rounded to one decimal.
    rng = np.random.default_rng(40)
    cases.append(numerical_case("ties_one_decimal", [round(v, 1) for v in rng.normal(0, 1, 400)], [round(v, 1) for v in rng.normal(0.2, 1, 300)]))
    # Pooled size a power of two (log2 exact: Sturges' ceil on an integer ratio).
    rng = np.random.default_rng(64)
    cases.append(numerical_case("pooled_64", rounded(rng.normal(0, 1, 40), 6), rounded(rng.normal(0.2, 1, 24), 6)))
    rng = np.random.default_rng(1024)
    cases.append(numerical_case("pooled_1024", rounded(rng.normal(0, 1, 512), 6), rounded(rng.normal(0, 1.3, 512), 6)))
    # Degenerate: all equal, and two constants.
    cases.append(numerical_case("all_equal", [1.5] * 30, [1.5] * 20))
    cases.append(numerical_case("two_constants", [1.0] * 30, [2.0] * 25))
    # Wide range and negative values, uniform.
    rng = np.random.default_rng(60)
    cases.append(numerical_case("uniform_wide", rounded(rng.uniform(-1e6, 1e6, 333), 6), rounded(rng.uniform(-8e5, 1.2e6, 257), 6)))
    # Histogram path whose smallest share is <= 0.0001 (replacement share/1e6).
    rng = np.random.default_rng(70)
    ref = rounded(np.concatenate([rng.normal(0, 1, 11999), [40.0]]), 5)
    cur = rounded(rng.normal(0, 1, 300), 5)
    cases.append(numerical_case("tiny_share_outlier", ref, cur))

    # Categorical (strings).
    cases.append(categorical_case("cat_shift", [("a", 500), ("b", 300), ("c", 150), ("d", 50)], [("a", 380), ("b", 320), ("c", 200), ("d", 90), ("e", 10)], 1))
    cases.append(categorical_case("cat_same", [("red", 120), ("green", 80), ("blue", 50)], [("red", 118), ("green", 83), ("blue", 49)], 2))
    cases.append(categorical_case("cat_rare", [("x", 14000), ("y", 999), ("z", 1)], [("x", 900), ("y", 100)], 3))
    cases.append(categorical_case("cat_disjoint", [("p", 10), ("q", 5)], [("r", 7)], 4))
    return cases


def kstwo_grid():
    rows = []
    ns = [1, 2, 3, 5, 10, 20, 50, 100, 139, 140, 141, 200, 1000, 5000, 5739, 20000, 100000, 100001, 500000]
    for n in ns:
        ds = {0.0, 0.3 / n, 0.5 / n, 0.75 / n, 1.0 / n, 1.5 / n, 0.5, 0.6, 0.9, 1.0, 1.2}
        if n > 1:
            ds.add((n - 1) / n + 0.25 / n)
        for nx2 in [0.05, 0.3, 0.7, 0.76, 1.5, 2.1, 2.3, 3, 3.9, 4.1, 5, 10, 17, 19, 30, 100, 369, 371]:
            ds.add(math.sqrt(nx2 / n))
        for ax in [1.0, 1.3, 1.5]:  # around n * x**1.5 == 1.4
            ds.add((ax / n) ** (2.0 / 3.0))
        for d in sorted(ds):
            if d > 1.5:
                continue
            rows.append([n, d, float(stats.kstwo.sf(d, n))])
    return rows


def smirnov_grid():
    rows = []
    for n in [1, 2, 5, 10, 11, 100, 1000, 5739, 100000, 2000000]:
        for x in [0.0, 0.5 / n, 1.0 / n, 0.01, 0.02, 0.05, 0.1, 0.3, 0.5, 0.7, 0.99, 1.0 - 0.5 / n, 1.0]:
            rows.append([n, x, float(special.smirnov(n, x))])
    return rows


def ks_exact_grid():
    rows = []
    rng = np.random.default_rng(99)
    sizes = [(1, 1), (1, 5), (3, 3), (7, 9), (10, 10), (12, 18), (50, 50), (64, 48), (200, 300), (1000, 1000), (1000, 999), (2500, 1500), (3000, 2000), (10000, 10000), (10000, 8000)]
    for n1, n2 in sizes:
        g = math.gcd(n1, n2)
        picks = {(n1, 0), (0, n2), (n1 // 2, n2 // 2)}
        # Large unequal sizes with a large D cost O(n1 * n2) in the exact
        # recursion: keep those few so the (debug-built) Rust test stays quick.
        for _ in range(6 if n1 * n2 <= 10**7 else 1):
            picks.add((int(rng.integers(0, n1 + 1)), int(rng.integers(0, n2 + 1))))
        for i, j in sorted(picks):
            d = abs(i / n1 - j / n2)
            ok, d_out, p = _attempt_exact_2kssamp(n1, n2, g, d, "two-sided")
            rows.append([n1, n2, d, bool(ok), float(d_out), float(p) if ok else None])
    return rows


def main():
    data = {
        "versions": FOUND,
        "cases": datasets(),
        "kstwo_sf": kstwo_grid(),
        "smirnov": smirnov_grid(),
        "ks_exact": ks_exact_grid(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(data['cases'])} cases)")


if __name__ == "__main__":
    main()
