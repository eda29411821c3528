"""Transferability scores against their definitions and the reference code every published figure
comes from (copied below with its provenance), known bounds, and orderings (informative beats
uninformative) for every score."""

import numpy as np
import pytest

from tlcore import transferability as tr

RNG = np.random.default_rng(0)


def brute_force_logme(f: np.ndarray, labels: np.ndarray) -> float:
    """The ICML 2021 definition, literally: MacKay's updates with the full D×D matrix A."""
    n, d = f.shape
    sigma = np.linalg.eigvalsh(f.T @ f).clip(min=0)
    out = []
    for c in range(labels.max() + 1):
        y = (labels == c).astype(float)
        alpha, beta = 1.0, 1.0
        for _ in range(2000):
            a = alpha * np.eye(d) + beta * f.T @ f
            m = beta * np.linalg.solve(a, f.T @ y)
            gamma = (beta * sigma / (alpha + beta * sigma)).sum()
            new_alpha = gamma / (m @ m)
            new_beta = (n - gamma) / ((f @ m - y) ** 2).sum()
            done = abs(new_alpha / new_beta - alpha / beta) <= 1e-10 * alpha / beta
            alpha, beta = new_alpha, new_beta
            if done:
                break
        a = alpha * np.eye(d) + beta * f.T @ f
        m = beta * np.linalg.solve(a, f.T @ y)
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - beta / 2 * ((f @ m - y) ** 2).sum()
                    - alpha / 2 * m @ m - np.linalg.slogdet(a)[1] / 2 - n / 2 * np.log(2 * np.pi))
        out.append(evidence / n)
    return float(np.mean(out))


def blobs(n: int, d: int, classes: int, separation: float) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % classes
    centres = RNG.normal(size=(classes, d)) * separation
    return centres[labels] + RNG.normal(size=(n, d)), labels


# --- reference code, copied with the math unchanged -------------------------------------------
# thuml/LogME @ 56551ca94a3295bcc37e6a01b1291911af985f07, LogME.py: truncated_svd and
# LogME._fit_fixed_point (the default ``_fit``), per class, numba decorators removed.
def reference_logme(f: np.ndarray, labels: np.ndarray) -> float:
    n, d = f.shape
    if n > d:
        u_, s, vh = np.linalg.svd(f.T @ f)
        s = np.sqrt(s)
        k = np.sum((s > 1e-10) * 1)
        u = (f @ vh.T)[:, :k] / s[:k].reshape(1, -1)
        s = s[:k]
    else:
        u, s, vh = np.linalg.svd(f, full_matrices=False)
    sigma = s.reshape(-1, 1) ** 2
    evidences = []
    for i in range(int(labels.max() + 1)):
        y_ = (labels == i).astype(np.float64).reshape(-1, 1)
        x2 = (u.T @ y_) ** 2
        res_x2 = (y_ ** 2).sum() - x2.sum()
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            gamma = (sigma / (sigma + t)).sum()
            m2 = (sigma * x2 / ((t + sigma) ** 2)).sum()
            res2 = (x2 / ((1 + sigma / t) ** 2)).sum() + res_x2
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            t_ = alpha / beta
            if abs(t_ - t) / t <= 1e-3:
                break
        evidence = (d / 2.0 * np.log(alpha) + n / 2.0 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * sigma))
                    - beta / 2.0 * res2 - alpha / 2.0 * m2 - n / 2.0 * np.log(2 * np.pi))
        evidences.append(evidence / n)
    return float(np.mean(evidences))


# thuml/Transfer-Learning-Library @ c4aa59eb565650a552b809411601d0589efbbfe4, tllib/ranking/hscore.py:
# h_score (Bao et al.'s, as in their repository YaojieBao/An-Information-theoretic-Metric-of-Transferability)
# and regularized_h_score (contributed for Ibrahim et al.; no code of the authors' own is published).
def reference_h_score(f: np.ndarray, y: np.ndarray) -> float:
    covf = np.cov(f, rowvar=False)
    g = np.zeros_like(f)
    for i in range(int(y.max() + 1)):
        g[y == i] = np.mean(f[y == i, :], axis=0)
    covg = np.cov(g, rowvar=False)
    return float(np.trace(np.dot(np.linalg.pinv(covf, rcond=1e-15), covg)))


def reference_regularized_h_score(features: np.ndarray, y: np.ndarray) -> float:
    from sklearn.covariance import LedoitWolf

    f = features.astype("float64")
    f = f - np.mean(f, axis=0, keepdims=True)
    g = np.zeros_like(f)
    cov = LedoitWolf(assume_centered=False).fit(f)
    alpha, covf_alpha = cov.shrinkage_, cov.covariance_
    for i in range(int(y.max() + 1)):
        g[y == i] = np.mean(f[y == i, :], axis=0)
    covg = np.cov(g, rowvar=False)
    return float(np.trace(np.dot(np.linalg.pinv(covf_alpha, rcond=1e-15), (1 - alpha) * covg)))


CASES = {  # (features, labels): the kinds of data the scores meet
    "well separated": lambda: blobs(200, 16, 4, 3.0),
    "overlapping": lambda: blobs(200, 16, 4, 0.3),
    "pure noise": lambda: (RNG.normal(size=(200, 16)), np.arange(200) % 4),
    # rank-deficient, as real features are (a ReLU unit that never fires is a zero column)
    "repeated features": lambda: (lambda f, y: (np.hstack([f, f]), y))(*blobs(200, 8, 4, 0.3)),
    "dead units": lambda: (lambda f, y: (np.hstack([f, np.zeros((200, 6))]), y))(*blobs(200, 24, 4, 0.3)),
    "D > N, dead units": lambda: (lambda f, y: (np.hstack([f, np.zeros((60, 20))]), y))(*blobs(60, 80, 4, 0.3)),
    "D > N, overlapping": lambda: blobs(60, 100, 4, 0.3),
    "D > N, pure noise": lambda: (RNG.normal(size=(60, 100)), np.arange(60) % 4),
    "D ≫ N, as penultimate features": lambda: blobs(120, 1280, 5, 0.2),
}


@pytest.mark.parametrize("case", CASES)
def test_scores_match_the_reference_code(case):
    f, labels = CASES[case]()
    assert tr.logme(f, labels) == pytest.approx(reference_logme(f, labels), abs=1e-4)
    assert tr.h_score(f, labels) == pytest.approx(reference_h_score(f, labels), abs=1e-4)
    assert tr.shrinkage_h_score(f, labels) == pytest.approx(reference_regularized_h_score(f, labels), abs=1e-4)


def test_logme_of_rank_deficient_features_does_not_depend_on_their_basis():
    """A rotation of the feature space changes no singular value, so it must not change LogME —
    the figure cannot hang on which roundoff lands in the zero directions."""
    f, labels = CASES["dead units"]()
    rotation, _ = np.linalg.qr(RNG.normal(size=(f.shape[1], f.shape[1])))
    assert tr.logme(f @ rotation, labels) == pytest.approx(tr.logme(f, labels), abs=1e-9)
    assert tr.logme(f @ rotation, labels) == pytest.approx(reference_logme(f @ rotation, labels), abs=1e-4)


@pytest.mark.parametrize("features", [np.zeros((200, 8)), np.zeros((20, 80)), RNG.normal(size=(200, 8)) * 1e-160],
                         ids=["zeros, N > D", "zeros, D > N", "underflowing"])
def test_logme_of_features_that_carry_nothing_is_minus_infinity_not_nan(features):
    """−inf (as the authors' code gives for zeros) ranks such a block last; a NaN would win max()."""
    assert tr.logme(features, np.arange(len(features)) % 4) == float("-inf")


def test_the_shrinkage_h_score_sees_noise_where_the_original_saturates():
    f, labels = CASES["D > N, pure noise"]()
    assert tr.h_score(f, labels) == pytest.approx(3.0, abs=1e-2)  # C − 1, whatever the features
    assert tr.shrinkage_h_score(f, labels) < 0.1 * 3.0  # a tenth of the saturated value
    informative, labels = blobs(60, 100, 4, 1.0)
    assert tr.shrinkage_h_score(informative, labels) > 5 * tr.shrinkage_h_score(f, labels)


@pytest.mark.parametrize(("n", "d"), [(120, 16), (30, 64)])  # more images than dimensions, and fewer
def test_full_rank_logme_is_the_icml_definition(n, d):
    f, labels = blobs(n, d, 3, 1.0)
    assert tr.logme(f, labels, full_rank=True) == pytest.approx(brute_force_logme(f, labels), rel=2e-3, abs=2e-3)
    if n > d:  # full rank: both evidences are the same model's
        assert tr.logme(f, labels) == pytest.approx(tr.logme(f, labels, full_rank=True), abs=1e-9)
    else:  # the reported LogME leaves out the (D − N)·log α the images cannot see
        assert tr.logme(f, labels) > tr.logme(f, labels, full_rank=True) + 0.1


def test_every_score_prefers_informative_features():
    informative, labels = blobs(200, 32, 4, 3.0)
    noise = RNG.normal(size=(200, 32))
    assert tr.logme(informative, labels) > tr.logme(noise, labels)
    assert tr.h_score(informative, labels) > 5 * tr.h_score(noise, labels)
    # A source classifier whose 10 classes refine the 4 target classes, against one that ignores them.
    z = labels * 2 + (np.arange(200) % 2)
    sharp = np.full((200, 10), 0.01)
    sharp[np.arange(200), z] = 0.91
    vague = RNG.dirichlet(np.ones(10), size=200)
    assert tr.leep(sharp, labels) > tr.leep(vague, labels)
    assert tr.nce(sharp.argmax(1), labels) > tr.nce(vague.argmax(1), labels)


def test_bounds_of_leep_nce_and_h_score():
    labels = np.arange(300) % 3
    perfect = np.eye(3)[labels]
    assert tr.leep(perfect, labels) == pytest.approx(0.0, abs=1e-9)
    assert tr.nce(labels, labels) == pytest.approx(0.0, abs=1e-12)
    uniform = np.full((300, 5), 0.2)
    assert tr.leep(uniform, labels) == pytest.approx(np.log(1 / 3))  # the class prior, nothing more
    assert tr.nce(np.zeros(300, int), labels) == pytest.approx(np.log(1 / 3))
    f, labels = blobs(300, 8, 3, 10.0)
    assert 0.0 < tr.h_score(f, labels) <= 2.0 + 1e-6  # at most C − 1


def test_batchnorm_gap_is_zero_for_the_same_statistics_and_grows_with_the_shift():
    mean, var = RNG.normal(size=64), RNG.uniform(0.5, 2, size=64)
    assert tr.batchnorm_gap(mean, var, mean, var) == pytest.approx(0.0, abs=1e-12)
    gaps = [tr.batchnorm_gap(mean + shift, var, mean, var) for shift in (0.1, 1.0, 3.0, 100.0)]
    assert gaps == sorted(gaps) and gaps[0] > 0 and gaps[-1] == pytest.approx(1.0)  # disjoint
    assert tr.batchnorm_gap(mean, var * 4, mean, var) > 0  # a change of spread counts too


def test_bad_labels_are_refused():
    with pytest.raises(ValueError, match="class indices"):
        tr.logme(np.ones((3, 2)), np.array([]))
