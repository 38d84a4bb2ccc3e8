"""How much a frozen backbone's features know about the label: a linear probe (logistic
regression on standardised features, its L2 strength chosen by an inner 3-fold
cross-validation) and a k-NN vote (cosine, k = 20), each scored by the AUC of its out-of-fold
predictions over 5 stratified folds of the downstream training and validation patients (never
the test split). Cross-validation, because a small cohort's validation split alone (~100
patients) moves a probe's AUC by several hundredths from one seed to the next."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lnm_jax.evaluation.metrics import safe_auc

KNN_K = 20


def _linear_scores(x_train, y_train, x_val, seed: int = 0) -> np.ndarray:
    clf = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
        {"logisticregression__C": np.logspace(-4, 1, 6).tolist()},
        cv=StratifiedKFold(3, shuffle=True, random_state=seed),
        scoring="roc_auc",
    )
    clf.fit(x_train, y_train)
    return clf.decision_function(x_val)


def _knn_scores(x_train, y_train, x_val, k: int = KNN_K) -> np.ndarray:
    """The share of positives among each validation image's k most cosine-similar training
    images."""
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)  # noqa: E731
    sims = unit(x_val) @ unit(x_train).T
    k = min(k, len(y_train))
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return np.asarray(y_train)[nearest].mean(axis=1)


FOLDS = 5


def probe(x: np.ndarray, y: np.ndarray, seed: int = 0, groups=None) -> dict[str, float]:
    """Out-of-fold AUCs of the linear and the k-NN probe of features ``x`` for labels ``y``.
    ``groups`` (one per row: its patient, or its near-copy group) keeps a group's rows in one
    fold where some group has several (a clip's frames, near copies: a k-NN vote had found the
    row's own twin in another fold, helper-91); where every row is its own group, the plain
    stratified folds."""
    y = np.asarray(y)
    scores = {"linear": np.zeros(len(y)), "knn": np.zeros(len(y))}
    if groups is not None and len(set(groups)) < len(groups):
        folds = StratifiedGroupKFold(FOLDS, shuffle=True, random_state=seed).split(x, y, groups)
    else:
        folds = StratifiedKFold(FOLDS, shuffle=True, random_state=seed).split(x, y)
    for train, held in folds:
        scores["linear"][held] = _linear_scores(x[train], y[train], x[held], seed)
        scores["knn"][held] = _knn_scores(x[train], y[train], x[held])
    return {f"{k}_auc": safe_auc(y, v) for k, v in scores.items()}
