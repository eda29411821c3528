"""Transferability scores: how well a pretrained model's outputs or features fit new labels,
measured without training. Pure functions on arrays (N images, D feature dimensions, Z source
classes, C target classes); each cites its paper. Higher means "transfers better" for all of
them except ``batchnorm_gap``, where higher means "further from the source data".
"""

from __future__ import annotations

import math

import numpy as np

_EPS = 1e-5  # keeps the LogME fixed point away from division by zero (as its authors' code)


@np.errstate(divide="ignore", invalid="ignore", over="ignore")  # degenerate features end as −inf, quietly
def logme(features: np.ndarray, labels: np.ndarray, *, full_rank: bool = False) -> float:
    """LogME: the log maximum evidence of a Bayesian linear model from features to one-hot labels,
    per sample, averaged over classes (You et al., ICML 2021, "LogME: Practical Assessment of
    Pre-trained Models for Transfer Learning"), computed as the authors' code does by default
    (thuml/LogME ``LogME._fit_fixed_point``, the fixed point of You et al., JMLR 2022, "Ranking
    and Tuning Pre-trained Models"): one decomposition of ``features`` serves every class; each
    class stops when α/β changes by ≤ 0.1 % or after 11 updates. Vectorised over classes.

    features: N×D, labels: N integers in [0, C). log|A| runs over the k = min(N, D) singular
    values, zeros included, as that code's does, so every published LogME figure is comparable.
    When D > N that leaves out (D − N)·log α, the prior's dimensions no image can see, which makes
    LogME rise with D on pure noise; ``full_rank=True`` adds them (the ICML paper's evidence of
    the full D-dimensional model) — a better-behaved score there, but not the one papers report.
    The app compares blocks and models of different widths with it (``tlcore.recommend``): on 20
    digits per class (160 training images), Lite0's 1,280-wide penultimate features scored 31.9
    by the published formula against 0.18 with ``full_rank``, whose best block (``_blocks.11-14``)
    was the one a real linear probe found best (0.975 validation accuracy against 0.875).

    Rank-deficient features are common (a ReLU unit that never fires on the data is a column of
    zeros: 90 of Lite0's 1,280 penultimate units on the digits). The authors' code nominally
    drops singular values ≤ 1e-10 when N > D, but takes them as square roots of the D×D Gram
    matrix's eigenvalues, so roundoff (~1e-7) keeps all D; what a zero direction adds to the
    residual it takes from the rest, so it counts only through log α, and the figure is well
    defined — the D-direction evidence (at the features' usual scale: for features smaller than
    ~1e-3 their cut does drop directions, and their figure then depends on the scale; this one
    does not). This computes it directly from the eigendecomposition of the smaller Gram matrix
    (2.3× faster than an SVD at 1,438×1,280), every direction counted.
    """
    f = np.asarray(features, dtype=np.float64)
    y = _one_hot(labels)  # N×C
    n, d = f.shape
    if n > d:
        eigenvalues, v = np.linalg.eigh(f.T @ f)  # v: D×D, right singular vectors
        projected = v.T @ (f.T @ y)  # = s·uᵀy
    else:
        eigenvalues, u = np.linalg.eigh(f @ f.T)  # u: N×N, left singular vectors
        projected = u.T @ y
    k = len(eigenvalues)
    seen = eigenvalues > max(eigenvalues.max(), 0.0) * max(n, d) * np.finfo(np.float64).eps  # nonzero
    if not seen.any():
        return float("-inf")  # features that are all zero explain nothing (the authors' code: −inf)
    # A zero direction's uᵀy (undefined for n > d) would move from `rest` to res2 and back: it counts
    # only through log α, so it is left out of the sums and added to log|A| below.
    projected = projected[seen] / np.sqrt(eigenvalues[seen])[:, None] if n > d else projected[seen]
    sigma = eigenvalues[seen][:, None]  # squared singular values, ×1
    x2 = projected ** 2  # ×C: the labels in the features' singular basis
    rest = (y ** 2).sum(0) - x2.sum(0)  # what lies outside the features' span
    alpha, beta = np.ones(y.shape[1]), np.ones(y.shape[1])
    m2, res2 = np.zeros(y.shape[1]), np.zeros(y.shape[1])
    active = np.ones(y.shape[1], dtype=bool)
    for _ in range(11):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum(0)
        m2 = np.where(active, (sigma * x2 / (t + sigma) ** 2).sum(0), m2)
        res2 = np.where(active, (x2 / (1 + sigma / t) ** 2).sum(0) + rest, res2)
        new_alpha, new_beta = gamma / (m2 + _EPS), (n - gamma) / (res2 + _EPS)
        converged = np.abs(new_alpha / new_beta - t) / t <= 1e-3
        alpha, beta = np.where(active, new_alpha, alpha), np.where(active, new_beta, beta)
        active &= ~converged
        if not active.any():
            break
    log_det = np.log(alpha + beta * sigma).sum(0) + (k - sigma.shape[0]) * np.log(alpha)
    if full_rank:
        log_det = log_det + (d - k) * np.log(alpha)
    evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - log_det / 2 - beta / 2 * res2
                - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))
    score = float(np.mean(evidence / n))
    return float("-inf") if math.isnan(score) else score  # NaN from features near underflow: no evidence


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
    """The original H-score: tr(cov(f)⁻¹ cov(E[f | y])), the share of feature variance the labels
    explain (Bao et al., ICIP 2019, "An Information-Theoretic Approach to Transferability in Task
    Transfer Learning"), as the authors' code computes it (sample covariances, pseudo-inverse).
    Between 0 and C − 1. When D ≥ N the covariance is singular and the score sits at C − 1
    whatever the features: use ``shrinkage_h_score`` there."""
    f = np.asarray(features, dtype=np.float64)
    cov_f = np.cov(f, rowvar=False)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ _between_class_cov(f, labels)))


def shrinkage_h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """The regularised H-score of Ibrahim, Ponomareva and Mazumder (arXiv:2110.06893, "Newer is
    not always better: Rethinking transferability metrics, their peculiarities, stability and
    performance"): tr(cov_α(f)⁻¹ (1 − α) cov(E[f | y])), cov_α the Ledoit–Wolf estimate with
    shrinkage α (scikit-learn). The (1 − α) keeps noise from scoring high: with α near 1 the
    score goes to 0, where the original saturates. Computed as the public reference does
    (Transfer-Learning-Library ``tllib.ranking.regularized_h_score``; no code of the authors' own
    was found), including its normalisations (Ledoit–Wolf over N, the class means over N − 1)."""
    from sklearn.covariance import ledoit_wolf, ledoit_wolf_shrinkage

    f = np.asarray(features, dtype=np.float64)
    f = f - f.mean(0)
    n, d = f.shape
    if d <= n:
        cov_f, alpha = ledoit_wolf(f, assume_centered=False)  # the function: the estimator also inverts it
        between = (1 - alpha) * _between_class_cov(f, labels)
        try:
            return float(np.trace(np.linalg.solve(cov_f, between)))  # positive definite when α > 0
        except np.linalg.LinAlgError:
            return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ between))
    # D > N (1,280 features, a few hundred images): the same trace through N×N matrices by the
    # Woodbury identity, N²D work instead of D³ (1.7 s → 0.02 s for 160 images on one core).
    # cov_α = a·I + b·FᵀF with a = α·tr(S)/D, b = (1 − α)/N; the class means G give
    # tr(cov_α⁻¹ GᵀG) = tr(GGᵀ)/a − (b/a)·tr(GFᵀ (a·I + b·FFᵀ)⁻¹ FGᵀ).
    alpha = ledoit_wolf_shrinkage(f, assume_centered=False)
    a, b = alpha * (f * f).sum() / (n * d), (1 - alpha) / n
    if a <= 0:  # no shrinkage and a singular covariance: only the pseudo-inverse answers
        cov_f = ledoit_wolf(f, assume_centered=False)[0]
        return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ ((1 - alpha) * _between_class_cov(f, labels))))
    g = _class_means(f, labels)
    g = g - g.mean(0)  # as np.cov centres it
    cross = g @ f.T  # N×N
    inner = np.linalg.solve(a * np.eye(n) + b * (f @ f.T), cross.T)
    trace = (np.trace(g @ g.T) - b * np.trace(cross @ inner)) / a
    return float((1 - alpha) * trace / (n - 1))


def _class_means(f: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each sample replaced by its class's mean feature vector (N×D)."""
    y = np.asarray(labels)
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(0)
    return g


def _between_class_cov(f: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """cov(E[f | y]) over the N samples (sample covariance, N − 1)."""
    return np.cov(_class_means(f, labels), rowvar=False)


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
