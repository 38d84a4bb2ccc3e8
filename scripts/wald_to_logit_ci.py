"""The logit-scale DeLong CI of every symmetric (Wald) 'AUC (lo-hi)' written in the docs, from
the AUC and its SE = (hi - lo) / (2 z) (exact but for the 3-decimal rounding).


    python scripts/wald_to_logit_ci.py
"""

import argparse
import re
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    txt = "".join((DOCS / name).read_text() for name in ("results_public_data.md", "evaluation.md"))
    z = 1.959964
    out = []
    for a, lo, hi in sorted(set(re.findall(r"(0\.\d{3})\*{0,2} \((0\.\d{3})-(0\.\d{3})\)", txt))):
        a, lo, hi = float(a), float(lo), float(hi)
        if abs((a - lo) - (hi - a)) > 0.0015:  # asymmetric: a bootstrap interval
            continue
        lg, hw = np.log(a / (1 - a)), z * (hi - lo) / (2 * z) / (a * (1 - a))
        nlo, nhi = 1 / (1 + np.exp(-(lg - hw))), 1 / (1 + np.exp(-(lg + hw)))
        out.append((nlo - lo, nhi - hi))
        print(f"{a:.3f} Wald ({lo:.3f}-{hi:.3f}) -> logit ({nlo:.3f}-{nhi:.3f})")
    d = np.array(out)
    lo_shift = f"{d[:, 0].min():+.3f} to {d[:, 0].max():+.3f}"
    print(f"{len(d)} intervals; shift of the lower end {lo_shift}, upper {d[:, 1].min():+.3f} to {d[:, 1].max():+.3f}")


if __name__ == "__main__":
    main()
