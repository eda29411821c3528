import numpy as np

from tlcore.pareto import pareto_front


def test_front_keeps_only_undominated_points():
    cost = np.array([1.0, 2.0, 3.0, 2.0, 4.0, np.nan])
    score = np.array([70.0, 75.0, 74.0, 75.0, 80.0, 99.0])
    # (3, 74) is dominated by (2, 75); the tie at cost 2 keeps one point; NaN never counts.
    assert pareto_front(cost, score).tolist() == [True, True, False, False, True, False]


def test_front_of_random_points_is_monotone():
    rng = np.random.default_rng(0)
    cost, score = rng.random(200), rng.random(200)
    mask = pareto_front(cost, score)
    order = np.argsort(cost[mask])
    assert np.all(np.diff(score[mask][order]) > 0)
    for i in np.flatnonzero(~mask):  # every dropped point is dominated by a kept one
        assert np.any((cost[mask] <= cost[i]) & (score[mask] >= score[i]))
