"""Patient-level, stratified, seeded splits, saved to the run folder for audit and reuse.

The paper: 8:2 train/test, then 8:2 train/validation of the training part. K-fold: each fold
is the test set once and the rest is split 8:2 into train/validation.  Patients are sorted
by id before splitting, so a split depends on the cohort and the seed, not on row order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from lnm_jax import names
from lnm_jax.fileio import DamagedFileError, is_real, json_text, read_json, seed_mod, write_text

SUBSETS = names.SPLITS


@dataclasses.dataclass(frozen=True)
class Split:
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    fold: int | None = None

    def subset(self, name: str) -> tuple[str, ...]:
        if name not in SUBSETS:
            raise KeyError(f"unknown split '{name}', expected one of {SUBSETS}")
        return getattr(self, name)


class SplitError(ValueError):
    """A cohort that cannot be split as asked (too small, a class missing from a subset)."""


class ClassBalanceError(SplitError):
    """A cut or a subset short of one class's patients: more of that class would do (said by
    :func:`_with_class_advice`)."""


class SplitMismatchError(ValueError):
    """A stored split was made with other settings (or another manifest) than the config's."""


# What a split depends on besides the patients: a stored split is reused only if these match.
SETTING_KEYS = ("manifest_sha256", "method", "seed", "test_fraction", "val_fraction")


def split_digest(split: Split) -> str:
    """SHA-256 of which patients ``split`` puts in each subset (each subset's ids sorted): what a
    checkpoint records of the split it was trained on, so that a ``splits.json`` edited to move
    a training patient into test is refused rather than scored as unseen."""
    subsets = {name: sorted(split.subset(name)) for name in SUBSETS}
    return hashlib.sha256(json.dumps(subsets, sort_keys=True).encode()).hexdigest()


def assert_disjoint(split: Split) -> None:
    """Raises if any patient is in two subsets (or twice in one)."""
    seen: dict[str, str] = {}
    for name in SUBSETS:
        for pid in split.subset(name):
            if pid in seen:
                raise SplitError(f"patient '{pid}' is in both '{seen[pid]}' and '{name}'")
            seen[pid] = name


def assert_both_classes(split: Split, labels: dict[str, int]) -> None:
    """Raises if a subset lacks a class: its AUC (and the plateau schedule, early stopping and
    checkpoint choice that read the validation AUC) would be undefined."""
    for name in SUBSETS:
        ids = split.subset(name)
        counts = [sum(labels[p] == c for p in ids) for c in (0, 1)]
        if min(counts) == 0:
            fold = "" if split.fold is None else f" of fold {split.fold}"
            raise ClassBalanceError(
                f"the {name} subset{fold} has {len(ids)} patients, {counts[1]} positive and {counts[0]} "
                "negative: every subset needs both classes (a larger cohort, or other split fractions)"
            )


NEW_RUN = "use a new --workdir (or delete the file if nothing was trained on it)"


def check_stored(doc: dict, wanted: dict, path: Path | str, fix: str = NEW_RUN) -> None:
    """Raises :class:`SplitMismatchError` naming every setting in which the split stored at
    ``path`` (its document ``doc``) differs from ``wanted``, ending with ``fix`` (what to do; by
    default a training's: a new run folder). A file written before a setting was recorded
    cannot be checked for it."""
    if doc.get("manifest_sha256") != wanted.get("manifest_sha256"):
        raise SplitMismatchError(
            f"{path} holds a split of another manifest: the manifest changed since the split was made (sha256 "
            f"{str(doc.get('manifest_sha256'))[:12]} then, {str(wanted.get('manifest_sha256'))[:12]} now); {fix}"
        )
    for k in SETTING_KEYS:  # a setting of another kind than the one made now: an edit, not another split
        given, now = doc.get(k), wanted.get(k)
        numbers = all(is_real(v) for v in (given, now))
        if k in doc and now is not None and type(given) is not type(now) and not numbers:
            raise _damaged(path, f"its setting '{k}' is {given!r}, where a split records {type(now).__name__}s")
    changed = [k for k in SETTING_KEYS if k in doc and doc[k] != wanted.get(k)]
    if changed:
        raise SplitMismatchError(
            f"{path} holds a split made with "
            + ", ".join(f"{k}={doc[k]!r}" for k in changed)
            + " but the config asks for "
            + ", ".join(f"{k}={wanted.get(k)!r}" for k in changed)
            + f"; {fix}"
        )


def _sorted(ids: Sequence[str], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    if len(ids) != len(labels):
        raise SplitError(f"{len(ids)} ids but {len(labels)} labels")
    order = np.argsort(np.asarray(ids, dtype=object).astype(str), kind="stable")
    return np.asarray(ids, dtype=object)[order], np.asarray(labels)[order]


def _stratified_cut(ids, labels, fraction: float, seed: int, what: str, setting: str, need: int | None):
    """``train_test_split`` of ``ids``, ``fraction`` of them (rounded up, as scikit-learn rounds)
    set aside; ``seed`` may be a derived one (``seed + 1``): wrapped into scikit-learn's range
    (unchanged below 2**32 - 1). A cut that cannot hold each class on both sides raises
    :class:`SplitError` in the split's words: ``what`` it is, the ``setting`` that sets its
    ``fraction``, and ``need``, the cohort size whose every cut would (:func:`_smallest_cohort`)."""
    if not 0 < fraction < 1:
        raise SplitError(f"{setting}={fraction!r} must be a number > 0 and < 1")
    counts = np.bincount(labels.astype(int), minlength=2)
    n, held, classes = len(ids), math.ceil(fraction * len(ids)), int((counts > 0).sum())
    head = f"cannot make a stratified {what} split of {n} patients (class counts {counts.tolist()})"
    if 0 < (fewest := counts[counts > 0].min()) < 2:
        cls = int(np.flatnonzero(counts == fewest)[0])
        raise ClassBalanceError(f"{head}: class {cls} has {fewest} patient, and each side of the split needs one")
    if held < classes or n - held < classes:
        side = f"sets aside {held}" if held < classes else f"keeps {n - held}"
        fix = f"a smaller {setting}"
        if held < classes:
            fix = (
                f"the cohort needs at least {need} patients at these fractions, or " if need else ""
            ) + f"a larger {setting}"
        raise SplitError(f"{head}: {setting}={fraction:g} {side}, where each side needs one of each class: {fix}")
    try:
        a, b, la, lb = train_test_split(ids, labels, test_size=fraction, stratify=labels, random_state=seed_mod(seed))
    except ValueError as e:
        raise SplitError(f"{head}: {e}") from None
    return a, b, la, lb


def _smallest_cohort(n: int, cuts) -> int | None:
    """The smallest cohort of ``n`` patients or more each of whose cuts sets aside and keeps
    at least one patient of each class (of two): ``cuts(m)`` gives a cohort of ``m``'s cuts as
    (fraction, patients cut) pairs. A size that would do at the least (the classes' balance
    may ask more); None where none up to ``n`` + 100,000 does."""
    return next((m for m in range(n, n + 100_000) if all(2 <= math.ceil(f * k) <= k - 2 for f, k in cuts(m))), None)


def _with_class_advice(split, ids: np.ndarray, labels: np.ndarray):
    """``split(ids, labels)``; a :class:`ClassBalanceError` from it said with the fewest patients
    of the rarer class with which the same split (its fractions and seed) gives every cut and
    subset both classes, the other class's count as it is: scikit-learn allocates each class's
    patients to a cut by its counts and the seed alone (not by the patients), so the count is
    found by splitting that many placeholder patients. Nothing is added where no count up to
    the other class's does (the cohort is too small at these fractions)."""
    try:
        return split(ids, labels)
    except ClassBalanceError as e:
        counts = np.bincount(labels.astype(int), minlength=2)
        rare = int(np.argmin(counts))
        for k in range(counts[rare] + 1, counts[1 - rare] + 1):
            trial = np.array([1 - rare] * counts[1 - rare] + [rare] * k)
            try:
                split(np.array([f"{i:09d}" for i in range(len(trial))], dtype=object), trial)
            except SplitError:
                continue
            raise ClassBalanceError(
                f"{e}; with its {counts[1 - rare]} patients of class {1 - rare}, {k} of class {rare} (it has "
                f"{counts[rare]}) would split at these fractions and seed"
            ) from None
        raise


def holdout_split(
    ids: Sequence[str],
    labels: Sequence[int],
    *,
    seed: int,
    test_fraction: float = 0.2,
    val_fraction: float = 0.2,
    together: Sequence[Sequence[str]] = (),
) -> Split:
    """The paper's protocol: stratified train/test, then train/validation. :class:`SplitError`
    where the cohort cannot be split so, with the size (or the count of the rarer class) that
    would do. ``together``: groups of IDs kept in one subset (:func:`near_copy_groups`), each
    in its first ID's; without groups, the split is the stratified one unchanged."""
    ids, labels = _sorted(ids, labels)
    split = _with_class_advice(lambda i, y: _holdout(i, y, seed, test_fraction, val_fraction), ids, labels)
    return _checked(_kept_together(split, together), ids, labels)


def near_copy_groups(cohort) -> list[tuple[str, ...]]:
    """The IDs of ``cohort``'s patients whose still pictures are near copies of one another's (a
    JPEG re-encode, a resize, a mirror image: :mod:`lnm_jax.data.cohorts.similar`, which reading
    the manifest warns of as ``similar_image``), grouped: every split keeps such patients in one
    subset, so one picture under two IDs is not trained on and tested on (helper-90: a near copy
    of a training patient's images had been drawn into the test set, the warning saying only
    that it could). Compared only where that warning was given (every pair: 8 s for 8,192
    pictures here), [] otherwise."""
    from lnm_jax.data.cohorts.manifest import SIMILAR_IMAGE  # noqa: PLC0415
    from lnm_jax.data.cohorts.similar import near_groups  # noqa: PLC0415

    if not any(w.code == SIMILAR_IMAGE for w in cohort.warnings):
        return []
    where = [(p.patient_id, p.thumbnail(col)) for p in cohort.patients for col in p.thumbnails]
    return near_groups([t for _, t in where], [pid for pid, _ in where])


def _kept_together(split: Split, together: Sequence[Sequence[str]]) -> Split:
    """``split`` with each group's members moved into the subset of its first ID."""
    if not together:
        return split
    subset_of = {p: s for s in ("train", "val", "test") for p in getattr(split, s)}
    for group in together:
        for member in group:
            subset_of[member] = subset_of[group[0]]
    return Split(
        *(tuple(sorted(p for p, s in subset_of.items() if s == name)) for name in ("train", "val", "test")), split.fold
    )


def _checked(split: Split, ids: np.ndarray, labels: np.ndarray) -> Split:
    assert_disjoint(split)
    assert_both_classes(split, dict(zip(ids, labels)))
    return split


def _holdout(ids: np.ndarray, labels: np.ndarray, seed: int, test_fraction: float, val_fraction: float) -> Split:
    need = _smallest_cohort(len(ids), lambda m: [(test_fraction, m), (val_fraction, m - math.ceil(test_fraction * m))])
    rest, test, lrest, _ = _stratified_cut(ids, labels, test_fraction, seed, "train/test", "test_fraction", need)
    train, val, _, _ = _stratified_cut(rest, lrest, val_fraction, seed + 1, "train/validation", "val_fraction", need)
    split = Split(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)))
    assert_disjoint(split)
    assert_both_classes(split, dict(zip(ids, labels)))
    return split


def kfold_splits(
    ids: Sequence[str],
    labels: Sequence[int],
    *,
    k: int,
    seed: int,
    val_fraction: float = 0.2,
    together: Sequence[Sequence[str]] = (),
) -> list[Split]:
    """Stratified k-fold: each fold is the test set once; the rest is split train/validation.
    :class:`SplitError` as :func:`holdout_split`'s. ``together``: groups of IDs kept in one
    subset of every fold (each in its first ID's test fold, then its train or validation)."""
    ids, labels = _sorted(ids, labels)
    if k < 2:
        raise SplitError(f"k-fold needs k >= 2, got {k}")
    folds = _with_class_advice(lambda i, y: _kfold(i, y, k, seed, val_fraction), ids, labels)
    if not together:
        return folds
    test_of = {p: f for f, s in enumerate(folds) for p in s.test}
    for group in together:
        for member in group:
            test_of[member] = test_of[group[0]]
    out = []
    for f, s in enumerate(folds):
        in_val = set(s.val)  # a patient moved out of this fold's test set trains
        rest = [p for p, t in test_of.items() if t != f]
        split = Split(
            tuple(p for p in rest if p not in in_val),
            tuple(p for p in rest if p in in_val),
            tuple(p for p, t in test_of.items() if t == f),
            f,
        )
        out.append(_checked(_kept_together(split, together), ids, labels))
    return out


def _kfold(ids: np.ndarray, labels: np.ndarray, k: int, seed: int, val_fraction: float) -> list[Split]:
    if (counts := np.bincount(labels.astype(int), minlength=2)).min() < k:  # one per fold's test set
        raise ClassBalanceError(f"k={k} folds need at least {k} patients of each class, got {counts.tolist()}")
    need = _smallest_cohort(len(ids), lambda m: [(val_fraction, m - math.ceil(m / k))])
    folds = []
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (rest_idx, test_idx) in enumerate(skf.split(ids, labels)):
        train, val, _, _ = _stratified_cut(
            ids[rest_idx],
            labels[rest_idx],
            val_fraction,
            seed + 1 + fold,
            f"fold {fold} train/validation",
            "val_fraction",
            need,
        )
        split = Split(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(ids[test_idx])), fold)
        assert_disjoint(split)
        assert_both_classes(split, dict(zip(ids, labels)))
        folds.append(split)
    return folds


def save_splits(path: Path, splits: Sequence[Split], *, labels: dict[str, int], **settings) -> None:
    """Writes the splits (with per-subset class counts and the ``settings`` they were made
    with: :data:`SETTING_KEYS`) as JSON, atomically."""
    if missing := set(SETTING_KEYS) - set(settings):
        raise TypeError(f"save_splits needs the settings {sorted(missing)}")
    doc = {
        **settings,
        "splits": [
            {
                "fold": s.fold,
                **{n: list(s.subset(n)) for n in SUBSETS},
                "counts": {
                    n: {"patients": len(s.subset(n)), "lnm_positive": int(sum(labels[p] for p in s.subset(n)))}
                    for n in SUBSETS
                },
            }
            for s in splits
        ],
    }
    write_text(path, json_text(doc, indent=1))  # atomic; a failed write names the file, leaves no temp


REMEDY = "restore it from a copy, or use a new --workdir"


def _damaged(path: Path, what: str) -> DamagedFileError:
    return DamagedFileError.edited(path, what, REMEDY)


def load_splits(path: Path) -> tuple[list[Split], dict]:
    """Reads a splits file and checks what it holds: a non-empty list of splits, each with
    non-empty ``train``, ``val`` and ``test`` lists of patient ids (strings), disjoint. A file
    edited by hand or damaged is one :class:`DamagedFileError` naming it and the first thing
    wrong (:func:`check_patients` checks the ids against a cohort)."""
    doc = read_json(path, required=("splits",), remedy=REMEDY)

    entries = doc["splits"]
    if not isinstance(entries, list) or not entries:
        raise _damaged(path, f"'splits' is {entries!r}, not a non-empty list of splits")
    splits = []
    for i, s in enumerate(entries):
        if not isinstance(s, dict):
            raise _damaged(path, f"split {i} is {s!r}, not an object")
        for name in SUBSETS:
            subset = s.get(name)
            if not isinstance(subset, list) or not subset:
                given = repr(subset) if name in s else "missing"
                raise _damaged(path, f"split {i}'s '{name}' is {given}, not a non-empty list of patient ids")
            odd = next((p for p in subset if not isinstance(p, str)), None)
            if odd is not None:
                raise _damaged(path, f"split {i}'s '{name}' holds {odd!r}, not a patient id (a string)")
        split = Split(tuple(s["train"]), tuple(s["val"]), tuple(s["test"]), s.get("fold"))
        try:
            assert_disjoint(split)
        except SplitError as e:
            raise _damaged(path, f"split {i}: {e}") from None
        splits.append(split)
    return splits, doc


def check_patients(splits: Sequence[Split], ids: Sequence[str], path: Path) -> None:
    """:class:`DamagedFileError` naming ``path`` where a split names a patient not in ``ids``
    (the cohort's; call it once the file is known to be a split of this manifest)."""
    known = set(ids)
    for i, split in enumerate(splits):
        for name in SUBSETS:
            unknown = next((p for p in split.subset(name) if p not in known), None)
            if unknown is not None:
                raise _damaged(path, f"split {i}'s '{name}' names patient '{unknown}', who is not in the manifest")


@contextlib.contextmanager
def said_under(manifest: Path | str | None) -> Iterator[None]:
    """A :class:`SplitError` raised within, its line begun with ``manifest`` (the cohort's path),
    so a command names the cohort it could not split; ``None``: unchanged (a caller that names
    it first, as ``validate``)."""
    try:
        yield
    except SplitError as e:
        if manifest is None:
            raise
        raise type(e)(f"{manifest}: {e}") from None


def make_splits(config, cohort, *, named: bool = True) -> list[Split]:
    """The configured split(s) of ``cohort`` (a validated manifest) under ``config`` (its
    ``data.split`` and ``protocol.folds``): one holdout split, or ``protocol.folds`` folds;
    raises :class:`SplitError` when the cohort cannot be split so (before anything trains), its
    line beginning with the manifest's path (``named=False``: not, for a caller that names it)."""
    sc, folds = config.data.split, int(config.protocol.folds)
    with said_under(cohort.path if named else None):
        together = near_copy_groups(cohort)
        if folds:
            return kfold_splits(
                cohort.ids, cohort.labels, k=folds, seed=sc.seed, val_fraction=sc.val_fraction, together=together
            )
        return [
            holdout_split(
                cohort.ids,
                cohort.labels,
                seed=sc.seed,
                test_fraction=sc.test_fraction,
                val_fraction=sc.val_fraction,
                together=together,
            )
        ]
