"""Coverage of the 95% CI of a cross-validated AUC: LeDell et al.'s influence-curve interval on
the mean of the folds' AUCs (the package's ``stats.cv_auc_ci``) vs the DeLong interval on the
pooled out-of-fold scores (``stats.delong_ci``), K folds each scored by its own model.

Each fold's model is binormal (positives N(d_v, 1), negatives N(0, 1), true AUC
Phi(d_v / sqrt 2)), its scores shifted by its own offset c_v (models trained apart put their
scores on scales of their own: ``--offset-sd``); the target is the mean of the folds' true
AUCs, which both intervals claim to cover. R replicates per setting, seeded.

    python scripts/cv_auc_coverage.py [--replicates 2000] [--offset-sd 0.5]
"""

import argparse

import numpy as np
from scipy import stats

from lnm_jax.evaluation import stats as S


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicates", type=int, default=2000, help="replicates per setting (R >= 1; default 2000)")
    p.add_argument("--offset-sd", type=float, default=0.5, help="SD of each fold model's score offset (default 0.5)")
    a = p.parse_args(argv)
    if a.replicates < 1:
        p.error(f"--replicates {a.replicates}: at least 1")
    R = a.replicates
    print(f"R={R} per setting, offset SD {a.offset_sd}, Monte Carlo SE at 0.95: {np.sqrt(0.95 * 0.05 / R):.3f}")
    for k, n1, n0, d, d_sd in [
        (5, 12, 50, 1.0, 0.0),
        (5, 40, 80, 1.5, 0.0),
        (5, 40, 80, 1.5, 0.3),
        (10, 60, 120, 2.0, 0.3),
    ]:
        rng = np.random.default_rng(7)
        cover = {"cv": 0, "pooled": 0}
        width = {"cv": 0.0, "pooled": 0.0}
        for _ in range(R):
            ds = np.maximum(d + d_sd * rng.standard_normal(k), 0.0)
            target = float(np.mean(stats.norm.cdf(ds / np.sqrt(2))))
            ys, ss = [], []
            for v in range(k):  # patients dealt to folds in turn, as stratified folds deal them
                y = np.r_[np.ones(len(range(v, n1, k)), int), np.zeros(len(range(v, n0, k)), int)]
                ys.append(y)
                ss.append(rng.standard_normal(len(y)) + ds[v] * y + a.offset_sd * rng.standard_normal())
            for name, (_, lo, hi) in (
                ("cv", S.cv_auc_ci(ys, ss)),
                ("pooled", S.delong_ci(np.concatenate(ys), np.concatenate(ss))),
            ):
                cover[name] += lo <= target <= hi
                width[name] += hi - lo
        print(
            f"K={k:2d} n1={n1:3d} n0={n0:3d} d={d} (fold SD {d_sd}): "
            + ", ".join(f"{n} {cover[n] / R:.3f} (mean width {width[n] / R:.3f})" for n in ("cv", "pooled"))
        )


if __name__ == "__main__":
    main()
