#!/usr/bin/python3
"""Numeric oracle for analysis: Welch t, Mann-Whitney U and the exact binomial test.

Run from the repository root with Debian's python3-scipy (apt-get install python3-scipy):

    /usr/bin/python3 analysis/testdata/oracle/gen.py > analysis/testdata/oracle/cases.json

The output is committed; Go tests read only the JSON and never run Python. Values are
rounded to 6 significant digits *before* scipy sees them, so Go and scipy test exactly
the same numbers after the JSON round trip. Deterministic: fixed seed.
"""
import json
import math
import sys

import numpy as np
import scipy
from scipy import stats

rng = np.random.default_rng(20261123)
ALTS = ["two-sided", "greater", "less"]


def r6(v):
    return [float(f"{x:.6g}") for x in v]


def sample(kind, n, shift):
    if kind == "normal":
        v = rng.normal(10 + shift, 2, n)
    elif kind == "lognormal":  # skewed latency
        v = rng.lognormal(math.log(100) + shift / 10, 0.8, n)
    elif kind == "exponential":
        v = rng.exponential(5 * (1 + shift / 10), n)
    elif kind == "ties":  # heavy ties: small integer grid
        v = rng.integers(0, 6, n).astype(float) + (1 if shift > 0 and rng.random() < 0.5 else 0)
    elif kind == "zeros":  # mostly zeros (error counts per interval)
        v = np.where(rng.random(n) < 0.7, 0.0, rng.poisson(3 + shift, n).astype(float))
    elif kind == "halfsteps":  # Kayenta-like 0.5 quantised values
        v = np.round(rng.gamma(4, 0.6 + shift / 20, n) * 2) / 2
    elif kind == "constant":
        v = np.full(n, 7.0 + shift)
    else:
        raise ValueError(kind)
    return r6(v)


def sizes():
    # mostly small (3–300, log-uniform), a few large (up to 5000)
    for i in range(230):
        yield int(round(math.exp(rng.uniform(math.log(3), math.log(300)))))
    for n in [1000, 2000, 3500, 5000]:
        yield n


def finite(v):
    return v is not None and math.isfinite(v)


cases = []
kinds = ["normal", "lognormal", "exponential", "ties", "zeros", "halfsteps"]
for i, nx in enumerate(sizes()):
    ny = max(3, int(nx * math.exp(rng.uniform(-1, 1)))) if i % 5 else nx
    ny = min(ny, 5000)
    kind = kinds[i % len(kinds)]
    shift = [0.0, 0.0, 0.5, 1.0, 3.0][i % 5]
    x, y = sample(kind, nx, shift), sample(kind, ny, 0.0)
    if i % 37 == 5:  # one constant sample against a varying one
        x = sample("constant", nx, 0.0)
    if i % 53 == 7:  # both constant, different values: scipy's Welch gives NaN/inf
        x, y = sample("constant", nx, 1.0), sample("constant", ny, 0.0)
    if i % 61 == 11:  # both constant and equal
        x, y = sample("constant", nx, 0.0), sample("constant", ny, 0.0)
    c = {"name": f"{i:03d}-{kind}-{nx}x{ny}", "x": x, "y": y, "welch": {}, "mannwhitney": {}}
    with np.errstate(all="ignore"):
        for alt in ALTS:
            w = stats.ttest_ind(x, y, equal_var=False, alternative=alt)
            t, p = float(w.statistic), float(w.pvalue)
            c["welch"][alt] = {"t": t if finite(t) else None, "p": p if finite(p) else None}
            m = stats.mannwhitneyu(x, y, alternative=alt, use_continuity=True, method="asymptotic")
            u, p = float(m.statistic), float(m.pvalue)
            c["mannwhitney"][alt] = {"u": u, "p": p if finite(p) else None}
    cases.append(c)

binom = []
for i in range(60):
    n = int(round(math.exp(rng.uniform(0, math.log(1e6)))))
    p = float(f"{rng.uniform(0.001, 0.999):.6g}")
    k = int(min(n, max(0, rng.binomial(n, min(0.999, p * math.exp(rng.normal(0, 0.3)))))))
    e = {"name": f"binom-{i:02d}-{k}of{n}", "k": k, "n": n, "p": p}
    for alt in ALTS:
        r = stats.binomtest(k, n, p, alternative=alt)
        ci = r.proportion_ci(confidence_level=0.95, method="exact")
        e[alt] = {"p": float(r.pvalue), "lo": float(ci.low), "hi": float(ci.high)}
    binom.append(e)

json.dump({"generator": "analysis/testdata/oracle/gen.py", "scipy": scipy.__version__, "numpy": np.__version__,
           "cases": cases, "binomial": binom}, sys.stdout, separators=(",", ":"))
sys.stdout.write("\n")
