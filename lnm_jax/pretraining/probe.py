"""How much a frozen backbone's features know about the label: a linear probe (logistic
regression, its L2 strength chosen by 3-fold cross-validation on the training patients alone)
and a k-NN vote (cosine, k = 20), each fitted on the downstream training split and scored by
AUC on its validation split (never the test split)."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lnm_jax.evaluation.metrics import safe_auc

KNN_K = 20


def linear_probe_auc(x_train, y_train, x_val, y_val, seed: int = 0) -> float:
    clf = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)),
        {"logisticregression__C": np.logspace(-4, 1, 6).tolist()},
        cv=StratifiedKFold(3, shuffle=True, random_state=seed),
        scoring="roc_auc",
    )
    clf.fit(x_train, y_train)
    return safe_auc(y_val, clf.decision_function(x_val))


def knn_auc(x_train, y_train, x_val, y_val, k: int = KNN_K) -> float:
    """AUC of the share of positives among each validation image's k most cosine-similar
    training images."""
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)  # noqa: E731
    sims = unit(x_val) @ unit(x_train).T
    k = min(k, len(y_train))
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return safe_auc(y_val, np.asarray(y_train)[nearest].mean(axis=1))


def probe(x_train, y_train, x_val, y_val, seed: int = 0) -> dict[str, float]:
    return {
        "linear_auc": linear_probe_auc(x_train, y_train, x_val, y_val, seed),
        "knn_auc": knn_auc(x_train, y_train, x_val, y_val),
    }
