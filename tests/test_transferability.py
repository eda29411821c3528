"""Transferability scores against their definitions: a brute-force LogME, known bounds and
orderings (informative beats uninformative) for every score."""

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


@pytest.mark.parametrize(("n", "d"), [(120, 16), (30, 64)])  # more images than dimensions, and fewer
def test_logme_matches_the_definition(n, d):
    f, labels = blobs(n, d, 3, 1.0)
    assert tr.logme(f, labels) == pytest.approx(brute_force_logme(f, labels), rel=2e-3, abs=2e-3)


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
