"""Coverage of the 95% DeLong CI of the AUC, Wald (AUC +- z SE, clipped) vs logit scale (the
package's stats.delong_ci), binormal scores (positives N(d, 1), negatives N(0, 1); true AUC
Phi(d / sqrt 2)), R replicates per setting, seeded.

    python scripts/delong_ci_coverage.py [--replicates 2000]
"""

import argparse

import numpy as np
from scipy import stats

from lnm_jax.evaluation import stats as S


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicates", type=int, default=2000, help="replicates per setting (R >= 1; default 2000)")
    R = p.parse_args(argv).replicates
    if R < 1:
        p.error(f"--replicates {R}: at least 1")
    z = stats.norm.ppf(0.975)
    print(f"R={R} per setting, Monte Carlo SE at 0.95: {np.sqrt(0.95 * 0.05 / R):.3f}")
    for n1, n0, d in [(10, 20, 1.5), (15, 15, 2.5), (20, 42, 1.0), (40, 80, 1.5), (10, 10, 3.0), (20, 42, 2.5)]:
        true = stats.norm.cdf(d / np.sqrt(2))
        rng = np.random.default_rng(3)
        y = np.r_[np.ones(n1, int), np.zeros(n0, int)]
        cw = cl = 0
        ww = wl = 0.0
        for _ in range(R):
            s = rng.normal(size=n1 + n0) + d * y
            aucs, cov = S.delong_covariance(y, s[None])
            a, se = aucs[0], np.sqrt(max(cov[0, 0], 0.0))
            lo, hi = max(0.0, a - z * se), min(1.0, a + z * se)
            cw += lo <= true <= hi
            ww += hi - lo
            _, lo, hi = S.delong_ci(y, s)
            cl += lo <= true <= hi
            wl += hi - lo
        print(
            f"n1={n1:3d} n0={n0:3d} AUC {true:.3f}: Wald {cw / R:.3f} (mean width {ww / R:.3f}), "
            f"logit {cl / R:.3f} (mean width {wl / R:.3f})"
        )


if __name__ == "__main__":
    main()
