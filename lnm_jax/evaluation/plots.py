"""Figures: ROC, convergence, reliability and decision curves (matplotlib, headless)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from lnm_jax.evaluation.stats import wilson_ci
from lnm_jax.fileio import save_figure
from lnm_jax.training.selection import best_epoch


def literal_text(draw):
    """Decorator of a function that draws a figure: its text is drawn as written, not parsed as
    matplotlib's mathtext (helper-118: a ``task.label`` of ``$\\foo{x$`` from a run's config made
    ``evaluate`` fail after training with a parser's error naming nothing; a name with two
    dollars would have been typeset). The setting holds inside the call only (a notebook's own
    figures keep theirs)."""

    @functools.wraps(draw)
    def drawn(*args, **kwargs):
        with matplotlib.rc_context({"text.parse_math": False}):
            return draw(*args, **kwargs)

    return drawn


@literal_text
def plot_roc(curves: Mapping[str, tuple], path: Path, title: str = "ROC", ci_name: str = "95% CI") -> None:
    """``curves``: name -> ``(labels, scores, auc)`` or ``(labels, scores, auc, (lo, hi))``,
    the interval shown in the legend as ``ci_name`` (the method and level it was computed at),
    with the number of patients."""
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    for name, (labels, scores, auc, *ci) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        shown = ci and ci[0] is not None and bool(np.all(np.isfinite(ci[0])))  # (a one-class split's is NaN)
        # two lines an entry: one had run past the axes' left edge at this figure's width
        interval = f"\n{ci_name} {ci[0][0]:.3f}-{ci[0][1]:.3f}" if shown else ""
        ax.plot(fpr, tpr, lw=2, label=f"{name}: AUC {auc:.3f}, n={len(labels)}{interval}")
    ax.plot([0, 1], [0, 1], "k--", lw=1, alpha=0.5)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


@literal_text
def plot_convergence(history: Sequence[Mapping], path: Path, title: str = "Convergence") -> None:
    """Train/validation loss and AUC per epoch from the JSON-lines history, the epochs whose
    learning rate dropped (dotted) and the best epoch (the loop's choice: the highest
    validation AUC, a tie to the lower validation loss, NaN never: :mod:`lnm_jax.training.selection`;
    dashed) marked.

    The loss panel compares like with like: the training logits' plain BCE (``train_bce``,
    recorded since 2026-12-07) against the validation BCE. A history without it has only the
    training objective, which adds the auxiliary heads' and the lesion head's losses and
    weighs positives by ``pos_weight``: it is then drawn as that, labelled so (helper-93: the
    two had shared one axis as "loss", a run with ``aux_loss_weight=1`` reading as
    underfitting at 1.3 against 0.7)."""
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=120)
    bce = all("train_bce" in h for h in history)
    train_loss = [h["train_bce" if bce else "train_loss"] for h in history]
    # markers: a one-epoch run's single points drew nothing (helper-103); the loss on a log axis, so
    # that a first epoch's validation BCE of 2.6 does not flatten the rest (0.3-0.65) into the floor
    kw = {"marker": "o", "ms": 2.5}
    a1.plot(epochs, train_loss, label="train BCE" if bce else "train objective (BCE + auxiliary/lesion terms)", **kw)
    a1.plot(epochs, [h["val_loss"] for h in history], label="validation BCE", **kw)
    a1.set(xlabel="epoch", ylabel="loss (log scale)", yscale="log")
    a2.plot(epochs, [h["train_auc"] for h in history], label="train", **kw)
    a2.plot(epochs, [h["val_auc"] for h in history], label="validation", **kw)
    a2.set(xlabel="epoch", ylabel="AUC")
    drops = [h["epoch"] for prev, h in zip(history, history[1:]) if "lr" in h and h["lr"] < prev.get("lr", h["lr"])]
    best = best_epoch(history)  # the loop's own rule (a max over AUCs had marked a NaN first epoch)
    for ax in (a1, a2):
        for k, e in enumerate(drops):
            ax.axvline(e, color="grey", ls=":", lw=1, label="learning rate dropped" if k == 0 else None)
        if best is not None:
            ax.axvline(best, color="k", ls="--", lw=1, label=f"best epoch ({best})")
        if epochs:
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        if len(epochs) <= 12:  # each epoch a tick (MaxNLocator drew 0.5, 0.6, ... about a single epoch)
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


@literal_text
def plot_reliability(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: Path,
    n_bins: int = 10,
    title: str = "Reliability",
    label: str = "LNM",
) -> None:
    """``curves``: name -> (labels, probabilities); observed rate of ``label`` (the task's
    positive class, :mod:`lnm_jax.task`) per equal-width probability bin, each point at its
    bin's mean probability with its Wilson 95% interval (:func:`stats.wilson_ci`), joined only to
    a neighbouring bin's (a line across empty bins drew an agreement no patient showed); below,
    the patients per bin of each curve without ``T=`` in its name (helper-99: a point of one
    patient looked like one of 68)."""
    from lnm_jax.evaluation.calibration import expected_calibration_error, reliability_bins

    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5, 6.2), dpi=120, sharex=True, gridspec_kw={"height_ratios": [4, 1.2]}
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, alpha=0.5, label="perfect calibration")
    counted = [name for name in curves if "T=" not in name]
    width = 1.0 / n_bins / max(len(counted), 1)
    for name, (labels, probs) in curves.items():
        mean_p, rate, count = reliability_bins(labels, probs, n_bins)
        ece = expected_calibration_error(labels, probs, n_bins)
        x, y = [], []
        for b in range(n_bins):  # NaN between bins that are not neighbours: the line breaks there
            if count[b]:
                if x and not count[b - 1]:
                    x.append(np.nan), y.append(np.nan)
                x.append(mean_p[b]), y.append(rate[b])
        (line,) = ax.plot(x, y, "o-", ms=4, label=f"{name} (ECE {ece:.3f})")
        kept = count > 0
        lo, hi = np.array([wilson_ci(round(r * n), n) for r, n in zip(rate[kept], count[kept])]).T
        ax.errorbar(
            mean_p[kept],
            rate[kept],
            yerr=[rate[kept] - lo, hi - rate[kept]],
            fmt="none",
            ecolor=line.get_color(),
            elinewidth=0.8,
            capsize=2,
            alpha=0.7,
        )
        if name in counted:
            k = counted.index(name)
            left = np.arange(n_bins) / n_bins + k * width
            hist.bar(left, count, width=width, align="edge", color=line.get_color(), alpha=0.7, label=name)
    ax.set(ylabel=f"observed {label} rate (Wilson 95% CI)", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(loc="upper left", fontsize=7)
    hist.set(xlabel=f"predicted P({label})", ylabel="patients")
    hist.legend(fontsize=6, loc="upper center")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


@literal_text
def plot_decision_curve(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "Decision curve"
) -> None:
    """Net benefit vs threshold probability, with treat-all and treat-none references."""
    from lnm_jax.evaluation.calibration import net_benefit

    thresholds = np.linspace(0.01, 0.99, 99)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    prevalences, lowest = {}, 0.0
    for name, (labels, probs) in curves.items():
        benefit = net_benefit(labels, probs, thresholds)
        line = ax.plot(thresholds, benefit, label=name)[0]
        prevalences[name] = (float(np.mean(labels)), line.get_color())
        lowest = min(lowest, float(np.min(benefit)))
    # treat all at each curve's own prevalence (one line for all had used the last curve's:
    # helper-93); one line where they share it
    shared = len({p for p, _ in prevalences.values()}) == 1
    for name, (prevalence, colour) in prevalences.items():
        ax.plot(
            thresholds,
            prevalence - (1 - prevalence) * thresholds / (1 - thresholds),
            ":",
            color="k" if shared else colour,
            label="treat all" if shared else f"treat all ({name}, prevalence {prevalence:.2f})",
        )
        if shared:
            break
    ax.axhline(0.0, color="k", lw=1, label="treat none")
    top = max((p for p, _ in prevalences.values()), default=0.5)
    # every model curve inside (a validation curve at -0.09 had left a -0.05 floor unsaid), down
    # to as far below 0 as the top is above it: one overconfident patient at a threshold of 0.99
    # can reach -1.6 and squash the informative band (helper-97); a curve cut there is said
    floor = max(min(-0.05, 1.1 * lowest), -(top + 0.05))
    ax.set(xlabel="threshold probability", ylabel="net benefit", title=title, ylim=(floor, max(0.05, top + 0.05)))
    if lowest < floor:
        ax.text(0.99, floor, f"curves reach {lowest:.2f}, below this axis ", ha="right", va="bottom", fontsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
