"""Bootstrap AUC CI: scipy.stats.bootstrap (stratified, BCa; what evaluate uses) against the
former Python loop of roc_auc_score calls, on synthetic scores of three split sizes.

    python scripts/benchmark_bootstrap.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from lnm_jax.evaluation.metrics import bootstrap_auc_ci


def loop_ci(y, s, n_boot=2000, seed=0, level=0.95):
    """The former implementation: percentile bootstrap over patients, one-class resamples skipped."""
    r, aucs = np.random.default_rng(seed), []
    for _ in range(n_boot):
        i = r.integers(0, len(y), len(y))
        if y[i].min() != y[i].max():
            aucs.append(roc_auc_score(y[i], s[i]))
    return np.quantile(aucs, [(1 - level) / 2, (1 + level) / 2])


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    rng = np.random.default_rng(0)
    print("| n | AUC | scipy BCa CI | time | loop percentile CI | time |")
    print("|---:|---:|---|---:|---|---:|")
    for n in (62, 185, 426):
        y = (rng.random(n) < 0.35).astype(int)
        s = rng.normal(size=n) + 1.2 * y
        t = time.perf_counter()
        lo, hi = bootstrap_auc_ci(y, s)
        new = time.perf_counter() - t
        t = time.perf_counter()
        old_lo, old_hi = loop_ci(y, s)
        old = time.perf_counter() - t
        print(
            f"| {n} | {roc_auc_score(y, s):.3f} | {lo:.3f}-{hi:.3f} | {new:.3f} s "
            f"| {old_lo:.3f}-{old_hi:.3f} | {old:.2f} s |"
        )


if __name__ == "__main__":
    main()
