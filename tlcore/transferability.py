"""Transferability scores: how well a pretrained model's outputs or features fit new labels,
measured without training. Pure functions on arrays (N images, D feature dimensions, Z source
classes, C target classes); each cites its paper. Higher means "transfers better" for all of
them except ``batchnorm_gap``, where higher means "further from the source data".
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-5  # keeps the LogME fixed point away from division by zero (as its authors' code)


def logme(features: np.ndarray, labels: np.ndarray, *, max_iter: int = 100, tol: float = 1e-3) -> float:
    """LogME: the log maximum evidence of a Bayesian linear model from features to one-hot labels,
    per sample, averaged over classes (You et al., ICML 2021, "LogME: Practical Assessment of
    Pre-trained Models for Transfer Learning"), with the fixed-point solver of You et al., JMLR
    2022, "Ranking and Tuning Pre-trained Models" — one SVD of ``features`` serves every class.

    features: N×D, labels: N integers in [0, C). The prior's dimensions that the data cannot
    see (D > rank) are counted, so the value is the evidence of the full D-dimensional model.
    """
    f = np.asarray(features, dtype=np.float64)
    y = _one_hot(labels)  # N×C
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    keep = s > s.max(initial=0.0) * 1e-10
    u, sigma = u[:, keep], (s[keep] ** 2)[:, None]  # k×1: eigenvalues of FᵀF that are not zero
    k = sigma.shape[0]
    x2 = (u.T @ y) ** 2  # k×C: the labels in the features' singular basis
    rest = (y ** 2).sum(0) - x2.sum(0)  # what lies outside the features' span
    alpha, beta = np.ones(y.shape[1]), np.ones(y.shape[1])
    for _ in range(max_iter):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum(0)
        m2 = (sigma * x2 / (sigma + t) ** 2).sum(0)
        res2 = (x2 / (1 + sigma / t) ** 2).sum(0) + rest
        alpha, beta = gamma / (m2 + _EPS), (n - gamma) / (res2 + _EPS)
        if np.all(np.abs(alpha / beta - t) / t <= tol):
            break
    t = alpha / beta
    m2 = (sigma * x2 / (sigma + t) ** 2).sum(0)
    res2 = (x2 / (1 + sigma / t) ** 2).sum(0) + rest
    log_det = np.log(alpha + beta * sigma).sum(0) + (d - k) * np.log(alpha)
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - log_det / 2 - beta / 2 * res2
                - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))
    return float(np.mean(evidence / n))


def leep(source_probs: np.ndarray, labels: np.ndarray) -> float:
    """LEEP: log of the expected empirical prediction of the target labels through the source
    model's own classes (Nguyen et al., ICML 2020, "LEEP: A New Measure to Evaluate
    Transferability of Learned Representations").

    source_probs: N×Z softmax outputs of the source classifier (e.g. ImageNet's 1000 classes).
    Between log(1/C) (no information) and 0. In nats.
    """
    theta = np.asarray(source_probs, dtype=np.float64)
    y = _one_hot(labels)
    joint = y.T @ theta / len(theta)  # C×Z: P(y, z)
    conditional = joint / np.maximum(joint.sum(0, keepdims=True), 1e-300)  # P(y | z)
    expected = theta @ conditional.T  # N×C: the empirical predictor's P(y | x)
    picked = expected[np.arange(len(theta)), np.asarray(labels)]
    return float(np.mean(np.log(np.maximum(picked, 1e-300))))


def nce(source_labels: np.ndarray, labels: np.ndarray) -> float:
    """NCE: negative conditional entropy −H(Y | Z) of target labels given the source model's
    predicted class (Tran et al., ICCV 2019, "Transferability and Hardness of Supervised
    Classification Tasks"). Between −log C and 0; in nats."""
    z = np.unique(np.asarray(source_labels), return_inverse=True)[1]
    y = np.asarray(labels)
    joint = np.zeros((y.max() + 1, z.max() + 1))
    np.add.at(joint, (y, z), 1.0)
    joint /= len(y)
    conditional = joint / joint.sum(0, keepdims=True)
    nonzero = joint > 0
    return float((joint[nonzero] * np.log(conditional[nonzero])).sum())


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score: tr(cov(f)⁻¹ cov(E[f | y])), the share of feature variance the labels explain
    (Bao et al., ICIP 2019, "An Information-Theoretic Approach to Transferability in Task
    Transfer Learning"). cov(f) is the Ledoit–Wolf shrinkage estimate (scikit-learn), which
    Ibrahim et al. (ICLR 2023, "Newer is not always better") show is needed when D is large
    against N. Between 0 and C − 1."""
    from sklearn.covariance import ledoit_wolf  # the function: the estimator also inverts the matrix

    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(0)
    y = np.asarray(labels)
    cov_f = ledoit_wolf(f, assume_centered=True)[0]
    class_means = np.zeros_like(f)
    for c in np.unique(y):
        class_means[y == c] = f[y == c].mean(0)
    cov_between = class_means.T @ class_means / len(f)
    return float(np.trace(np.linalg.solve(cov_f, cov_between)))


def batchnorm_gap(data_mean: np.ndarray, data_var: np.ndarray, stored_mean: np.ndarray,
                  stored_var: np.ndarray, eps: float = 1e-5) -> float:
    """How far a BatchNorm layer's input on the new data is from the statistics it stored on the
    source data — the domain signal AdaBN adapts to (Li et al., 2016, "Revisiting Batch
    Normalization For Practical Domain Adaptation"): the squared Hellinger distance between the
    two per-channel Gaussians, averaged over channels. 0 = the same statistics, 1 = disjoint.
    Bounded, so a few near-constant channels cannot dominate it (a KL divergence would let them).
    Arrays of C channels."""
    m1, v1 = np.asarray(data_mean, np.float64), np.asarray(data_var, np.float64) + eps
    m2, v2 = np.asarray(stored_mean, np.float64), np.asarray(stored_var, np.float64) + eps
    overlap = np.sqrt(2 * np.sqrt(v1 * v2) / (v1 + v2)) * np.exp(-((m1 - m2) ** 2) / (4 * (v1 + v2)))
    return float(np.mean(1 - overlap))


def _one_hot(labels: np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0 or y.min() < 0:
        raise ValueError("labels must be a non-empty 1-D array of class indices")
    out = np.zeros((len(y), int(y.max()) + 1))
    out[np.arange(len(y)), y] = 1.0
    return out
