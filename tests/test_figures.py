"""What the figures draw: each line the numbers it claims (helper-93's figure review)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from lnm_jax.evaluation import plots
from lnm_jax.training import selection


@pytest.fixture()
def drawn(monkeypatch):
    """The figures ``plots`` draws, kept open instead of saved."""
    figures, close = [], plots.plt.close
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig))
    monkeypatch.setattr(plots.plt, "close", lambda fig: None)
    yield figures
    for fig in figures:
        close(fig)


def _lines(ax) -> dict[str, object]:
    return {line.get_label(): line for line in ax.get_lines()}


def _history(bce: bool = True) -> list[dict]:
    out = []
    for e in range(1, 9):
        h = {"epoch": e, "train_loss": 1.4 - 0.01 * e, "val_loss": 0.7 + 0.01 * (e - 4) ** 2, "train_auc": 0.6}
        h |= {
            "val_auc": [0.6, 0.7, 0.8, 0.8, 0.75, 0.8, 0.7, 0.7][e - 1],
            "lr": 1e-3 if e < 4 else 1e-4 if e < 7 else 1e-5,
        }
        if bce:
            h["train_bce"] = 0.7 - 0.01 * e
        out.append(h)
    return out


def test_the_convergence_figure_compares_like_losses_and_marks_drops_and_the_best_epoch(drawn, tmp_path):
    """helper-93: the training objective (BCE + auxiliary heads' loss) and the validation BCE
    shared one axis as "loss"; no learning-rate drop or best epoch was marked; ticks at 1.5."""
    history = _history()
    plots.plot_convergence(history, tmp_path / "c.png")
    loss_ax, auc_ax = drawn[0].axes
    lines = _lines(loss_ax)
    np.testing.assert_array_equal(lines["train BCE"].get_ydata(), [h["train_bce"] for h in history])
    np.testing.assert_array_equal(lines["validation BCE"].get_ydata(), [h["val_loss"] for h in history])
    for ax in (loss_ax, auc_ax):
        marks = [
            (line.get_label(), line.get_xdata()[0]) for line in ax.get_lines() if line.get_linestyle() in (":", "--")
        ]
        # drops at epochs 4 and 7; best: AUC 0.8 first at epoch 3, tied at 4 and 6, the lowest val loss at 4
        assert ("learning rate dropped", 4) in marks and any(x == 7 for _, x in marks)
        assert ("best epoch (4)", 4) in marks
        assert all(float(t).is_integer() for t in ax.get_xticks())
    # an older history (no train_bce): the objective, labelled as such
    plots.plot_convergence(_history(bce=False), tmp_path / "d.png")
    assert "train objective (BCE + auxiliary/lesion terms)" in _lines(drawn[1].axes[0])


def test_the_decision_curve_draws_treat_all_per_prevalence_and_every_curve_inside(drawn, tmp_path):
    """helper-93: one treat-all line at the last curve's prevalence for every curve, and a
    y-axis floor of -0.05 that a curve at -0.09 fell below unsaid."""
    r = np.random.default_rng(0)
    low = (np.r_[np.ones(20), np.zeros(80)], r.uniform(0, 1, 100))  # prevalence 0.2, uninformative
    high = (np.r_[np.ones(60), np.zeros(40)], np.r_[r.uniform(0.4, 1, 60), r.uniform(0, 0.6, 40)])
    plots.plot_decision_curve({"val": low, "test": high}, tmp_path / "dc.png")
    ax = drawn[0].axes[0]
    lines = _lines(ax)
    t = lines["val"].get_xdata()
    for name, prevalence in (("val", 0.2), ("test", 0.6)):
        treat_all = lines[f"treat all ({name}, prevalence {prevalence:.2f})"]
        np.testing.assert_allclose(treat_all.get_ydata(), prevalence - (1 - prevalence) * t / (1 - t))
    lowest = min(np.min(lines[n].get_ydata()) for n in ("val", "test"))
    # below -0.05 (the old floor): the axis goes as far below 0 as its top is above (0.65), and
    # says where a curve goes further
    assert lowest < -0.65 and ax.get_ylim()[0] == pytest.approx(-0.65)
    assert any(f"curves reach {lowest:.2f}, below this axis" in t.get_text() for t in ax.texts)
    # one overconfident negative: the curve reaches about -1.6 at 0.99; the axis stops as far
    # below 0 as its top is above, and says the curve goes on (helper-97: the band was squashed)
    y = np.r_[np.ones(30), np.zeros(30)]
    p = np.r_[np.full(30, 0.8), np.full(29, 0.2), 0.999]
    plots.plot_decision_curve({"test": (y, p)}, tmp_path / "dc2.png")
    ax = drawn[1].axes[0]
    assert ax.get_ylim()[0] == pytest.approx(-0.55) and np.min(_lines(ax)["test"].get_ydata()) < -1
    assert any("below this axis" in t.get_text() for t in ax.texts)


def test_roc_legends_give_the_auc_its_interval_and_n(drawn, tmp_path):
    r = np.random.default_rng(1)
    y = np.r_[np.ones(30), np.zeros(40)]
    score = y + r.standard_normal(70)
    plots.plot_roc(
        {"test": (y, score, 0.812, (0.7, 0.9)), "val": (y[:50], score[:50], 0.8)},
        tmp_path / "r.png",
        ci_name="95% DeLong CI",
    )
    lines = _lines(drawn[0].axes[0])
    fpr, tpr, _ = roc_curve(y, score)
    line = lines["test: AUC 0.812, n=70\n95% DeLong CI 0.700-0.900"]
    np.testing.assert_array_equal(line.get_xdata(), fpr)
    np.testing.assert_array_equal(line.get_ydata(), tpr)
    assert "val: AUC 0.800, n=50" in lines
    # a split of one class: its interval is NaN, and not shown as "nan-nan"
    plots.plot_roc({"test": (y, score, 0.8, (float("nan"), float("nan")))}, tmp_path / "r2.png")
    assert "test: AUC 0.800, n=70" in _lines(drawn[1].axes[0])
    # every legend inside the figure (an entry had run past its left edge)
    fig = drawn[0]
    fig.canvas.draw()
    box = fig.axes[0].get_legend().get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width


def test_the_figure_marks_the_epoch_the_loop_kept_where_a_first_validation_auc_is_nan(drawn, tmp_path):
    """helper-101: the figure chose its best epoch by ``max((val_auc, -val_loss))``, which
    returns a NaN first epoch (every comparison with NaN is false), while the loop's rule (NaN
    never improves) keeps a later one: now both use :mod:`lnm_jax.training.selection`."""
    history = _history()
    history[0]["val_auc"] = float("nan")
    assert max([(float("nan"), -1.0), (0.9, -0.5)])[1] == -1.0  # what the old figure's max did
    plots.plot_convergence(history, tmp_path / "c.png")
    marks = [line.get_label() for line in drawn[0].axes[1].get_lines() if line.get_linestyle() == "--"]
    assert marks == ["best epoch (4)"]
    assert selection.best_epoch([{**h, "val_auc": float("nan")} for h in history]) is None


def test_the_rule_replayed_over_a_runs_history_is_the_checkpoint_it_kept(triple_run):
    from lnm_jax.metric_writer import read_history

    ckpts = triple_run.checkpoints()
    try:
        kept = ckpts.latest_epoch("best")
    finally:
        ckpts.close()
    assert selection.best_epoch(read_history(triple_run.files.history)) == kept


def test_a_runs_history_holds_the_training_bce_the_figure_draws(triple_run, drawn, tmp_path):
    """Each epoch's record keeps the training logits' plain BCE beside the objective trained
    (``train_loss``), so that the convergence figure compares it with the validation BCE."""
    from lnm_jax.metric_writer import read_history

    history = read_history(triple_run.files.history)
    assert history and all(np.isfinite(h["train_bce"]) and np.isfinite(h["train_loss"]) for h in history)
    plots.plot_convergence(history, tmp_path / "c.png")
    np.testing.assert_array_equal(_lines(drawn[0].axes[0])["train BCE"].get_ydata(), [h["train_bce"] for h in history])


def test_a_one_epoch_history_is_drawn_as_points_on_its_epoch(drawn, tmp_path):
    """helper-103: a one-epoch run's convergence figure was blank (lines of one point, no
    marker) with ticks 0.945-1.050."""
    plots.plot_convergence(_history()[:1], tmp_path / "c.png")
    for ax in drawn[0].axes:
        assert list(ax.get_xticks()) == [1]
        assert all(line.get_marker() == "o" for line in ax.get_lines() if line.get_linestyle() == "-")


def test_the_rule_reads_a_nan_as_the_history_file_stores_it():
    """helper-102: the history is written without NaN (a NaN is stored as null), and the rule
    compared None with a float: TypeError inside evaluate's output folder."""
    history = [{**h, "val_auc": None if h["epoch"] == 1 else h["val_auc"]} for h in _history()]
    assert selection.best_epoch(history) == 4


def test_names_from_a_config_are_drawn_as_written(tmp_path):
    """helper-118: a ``task.label`` of ``$\\foo{x$`` (a run's config.json from another site) made
    ``evaluate`` fail after training, matplotlib's mathtext parser naming neither field nor
    file. Every figure draws such text as written; a notebook's own figures keep mathtext."""
    import matplotlib

    y = np.array([0, 1, 0, 1, 1, 0, 1, 0])
    p = np.linspace(0.1, 0.9, 8)
    label = "$\\foo{x$"
    plots.plot_reliability({"test": (y, p)}, tmp_path / "r.png", label=label, title=f"Reliability, {label}")
    plots.plot_roc({label: (y, p, 0.5, (0.2, 0.8))}, tmp_path / "roc.png")
    assert (tmp_path / "r.png").stat().st_size > 0 and (tmp_path / "roc.png").stat().st_size > 0
    assert matplotlib.rcParams["text.parse_math"] is True  # outside the call: as the process had it
