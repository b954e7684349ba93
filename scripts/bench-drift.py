"""Evidently 0.7.23 (PSI) and SciPy 1.14.1 (ks_2samp) on the data bench_drift wrote.

    python scripts/bench-drift.py DIR FEATURES

Prints each feature's PSI, KS statistic and p-value (to compare with quiver-ml's
lines) and the time of the same computation (PSI + KS per feature), the data
already in memory as pandas Series (Evidently's input), loading excluded.
"""
import sys
import time

import numpy as np
import pandas as pd
from evidently.legacy.calculations.stattests import psi_stat_test
from evidently.legacy.core import ColumnType
from scipy import stats

d, features = sys.argv[1], int(sys.argv[2])
data = [
    (pd.Series(np.fromfile(f"{d}/ref_{f}.f64", dtype="<f8")), pd.Series(np.fromfile(f"{d}/cur_{f}.f64", dtype="<f8")))
    for f in range(features)
]
start = time.perf_counter()
out = []
for ref, cur in data:
    psi = psi_stat_test(ref, cur, ColumnType.Numerical, None)
    ks = stats.ks_2samp(ref.to_numpy(), cur.to_numpy())
    out.append((psi.drift_score, ks.statistic, ks.pvalue))
secs = time.perf_counter() - start
for f, (psi, dd, p) in enumerate(out):
    print(f"feature {f:2}: psi {psi:.6f} ks {dd:.6f} p {p:.3e}")
print(f"evidently+scipy: {features} features x {len(data[0][1])} rows vs {len(data[0][0])}: {secs:.3f} s (PSI + KS)")
