"""Holm (1979) step-down adjustment of the 26 p-values quoted in docs/results_public_data.md, one
family; a quoted 'p < 0.001' enters as 0.001, so its adjusted value is an upper bound.


    python scripts/holm_adjusted_p.py
"""

import argparse

import numpy as np

quoted = {
    "split: triple vs flag": 0.017,
    "split: paper head vs flag": 0.61,
    "split: paper head vs late fusion": 0.12,
    "split: scratch late fusion vs flag": "<0.001",
    "split: scratch vs pretrained late fusion": 0.33,
    "CV pretrain: triple vs flag": 4e-7,
    "CV pretrain: triple vs scratch triple": 0.015,
    "CV scratch: triple vs flag": 0.019,
    "CV: view -r pretrain vs scratch": 0.011,
    "CV: B-mode pretrain vs scratch": 0.76,
    "crop split: dual crop vs whole": 2.6e-6,
    "crop split: triple crop vs whole": 0.71,
    "crop split: dual crop vs flag": 0.25,
    "crop split: triple crop vs flag": 0.0025,
    "CV crop: dual vs flag": 0.045,
    "CV head: triple vs whole": 0.011,
    "CV head: dual vs whole": 0.025,
    "CV head: triple vs flag": "<0.001",
    "CV crop: triple vs whole": "<0.001",
    "CV crop: triple vs head": 0.086,
    "CV crop: triple vs flag": "<0.001",
    "CV crop: triple vs own dual": 0.002,
    "CV DDTI: dual vs crop scratch": 0.018,
    "CV DDTI: dual vs flag": 0.77,
    "CV DDTI: triple vs crop scratch": 0.007,
    "CV 160px: triple vs 128px": 0.43,
}


def main(argv=None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    names = list(quoted)
    bound = np.array([v == "<0.001" for v in quoted.values()])
    p = np.array([0.001 if b else v for b, v in zip(bound, quoted.values())], float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    print(f"{m} p-values, Holm-adjusted (family-wise error over all of them):")
    for i in order:
        raw = "<0.001" if bound[i] else f"{p[i]:.2g}"
        print(f"  {names[i]:42s} p {raw:>7s}  Holm {'<=' if bound[i] else ' '}{adj[i]:.3g}")


if __name__ == "__main__":
    main()
