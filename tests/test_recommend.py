"""The matrix's two axes measured on data: digits are far from ImageNet, LFW faces close; the
advice follows the seeds' matrix and only training labels are used."""

import dataclasses

import pytest
import torch

from tlcore import data, features, recommend, zoo
from tlcore.finetune import TrialConfig

SPEC = zoo.get_spec("efficientnet_lite0")


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", size=32, max_per_class=20)


@pytest.fixture(scope="module")
def faces():
    return data.load("faces", size=64)


def test_digits_are_different_and_faces_similar(digits, faces):
    far = recommend.recommend(recommend.measure(SPEC, digits), SPEC)
    near = recommend.recommend(recommend.measure(SPEC, faces), SPEC)
    assert far.measurement.similarity < recommend.SIMILAR_AT <= near.measurement.similarity
    assert (far.size, far.similar) == ("small", False) and (near.size, near.similar) == ("small", True)
    assert near.strategy == recommend.STRATEGIES[("small", True)] and near.freeze == "all"
    assert far.freeze == "all"
    best = max(far.measurement.logme_by_block, key=lambda kv: kv[1])[0]
    assert far.probe_block == best  # the classifier reads the block whose features fit best
    for rec in (far, near):
        TrialConfig(model=SPEC.key, freeze=rec.freeze,  # the lab can run it
                    probe_block=rec.probe_block if rec.freeze == "all" else "penultimate"
                    ).check()
        assert len(rec.measurement.logme_by_block) == len(zoo.blocks_of(SPEC))  # every block but the head, + penultimate
        assert rec.measurement.batchnorm_gap and all(0.0 <= g <= 1.0 for _, g in rec.measurement.batchnorm_gap)
        assert recommend.batchnorm_reason(rec.measurement.batchnorm_gap) in rec.reasons
        assert any(r.startswith(f"{rec.measurement.per_class:g} training images") for r in rec.reasons)  # as the table
    assert any("hardest cell" in r for r in far.reasons) and not any("hardest cell" in r for r in near.reasons)


def test_a_similarity_measured_below_the_models_resolution_says_it_holds_for_that_size(digits):
    m = recommend.measure(SPEC, digits)
    at = {px: recommend.recommend(dataclasses.replace(m, resolution=px, similarity=sim), SPEC).reasons
          for px, sim in ((32, 0.1), (128, 0.9), (SPEC.crop_size, 0.9))}
    assert any("objects look smaller than they ever did" in r for r in at[32])  # low and different: the likely cause
    assert any(r.startswith(f"Measured at 128 px, the resolution your trials use; efficientnet_lite0 was trained "
                            f"at {SPEC.crop_size}.") for r in at[128])  # similar, yet only for that size
    assert not any("resolution" in r for r in at[SPEC.crop_size])


def test_images_smaller_than_the_model_needs_are_measured_enlarged_and_the_reasons_say_so(digits):
    rec = recommend.recommend(recommend.measure(SPEC, digits), SPEC)
    assert (rec.measurement.dataset_resolution, rec.measurement.resolution) == (32, 64)
    assert ("efficientnet_lite0 reads these 32 px images enlarged to 64 px, the smallest size at which its last "
            "feature map has more than one position") in " ".join(rec.reasons)


def test_a_similar_verdict_on_few_classes_says_what_it_does_not_measure(faces, digits):
    near = recommend.recommend(recommend.measure(SPEC, faces), SPEC)  # 2 classes: face or not
    assert near.similar and any(r.startswith("With 2 classes, 'similar' means ImageNet's classes tell them apart")
                                for r in near.reasons)
    m = recommend.measure(SPEC, digits)
    assert not any("'similar' means" in r for r in recommend.recommend(dataclasses.replace(m, similarity=0.9),
                                                                       SPEC).reasons)  # 10 classes


def test_the_headline_names_the_block_the_advised_classifier_reads(digits):
    m = recommend.measure(SPEC, digits)
    blocks = [b for b, _ in m.logme_by_block]
    for best in ("_blocks.5-7", features.PENULTIMATE):
        tilted = [(b, 1.0 if b == best else 0.0) for b in blocks]
        rec = recommend.recommend(dataclasses.replace(m, similarity=0.1, per_class=20, logme_by_block=tilted), SPEC)
        assert (rec.quadrant, rec.freeze, rec.probe_block) == ("small-different", "all", best)
        if best == features.PENULTIMATE:  # not "an earlier block" above a setting that reads the last one
            assert rec.strategy.endswith("the penultimate features fit your labels best")
        else:
            assert rec.strategy == recommend.STRATEGIES[("small", False)]


def test_where_logme_points_away_from_the_advice_the_validation_tries_its_block_too(digits):
    m = recommend.measure(SPEC, digits)
    blocks = [b for b, _ in m.logme_by_block]
    tilted = [(b, 1.0 if b == "_blocks.5-7" else 0.0) for b in blocks]
    near = recommend.recommend(dataclasses.replace(m, similarity=0.9, logme_by_block=tilted), SPEC)
    assert (near.freeze, near.probe_block) == ("all", features.PENULTIMATE)  # small and similar: the penultimate
    assert any(r.endswith("reads the penultimate features; the validation also tries a classifier on _blocks.5-7.")
               for r in near.reasons)
    trials = recommend.validation_trials(near, epochs=1)
    assert trials["classifier on _blocks.5-7 features (highest LogME)"].probe_block == "_blocks.5-7"
    # Where the advice already reads that block, it is tried once, as the advice.
    far = recommend.recommend(dataclasses.replace(m, similarity=0.1, logme_by_block=tilted), SPEC)
    names = list(recommend.validation_trials(far, epochs=1))
    assert "classifier on _blocks.5-7 features (advised)" in names and not any("highest LogME" in n for n in names)


def test_every_cells_validation_fits_a_demo_visitors_queue_and_names_logmes_block(digits):
    from tlcore.settings import DEMO_LIMITS

    m = recommend.measure(SPEC, digits)
    blocks = [b for b, _ in m.logme_by_block]
    for best in ("_blocks.5-7", features.PENULTIMATE):
        tilted = [(b, 1.0 if b == best else 0.0) for b in blocks]
        for per_class in (20.0, float(recommend.SMALL_PER_CLASS)):
            for similarity in (0.1, 0.9):
                rec = recommend.recommend(dataclasses.replace(m, per_class=per_class, similarity=similarity,
                                                              logme_by_block=tilted), SPEC)
                trials = recommend.validation_trials(rec, epochs=1)
                assert len(trials) <= DEMO_LIMITS.max_waiting_per_session, (rec.size, rec.similar, list(trials))
                tried = any(t.freeze == "all" and t.probe_block == best for t in trials.values())
                assert tried or best == features.PENULTIMATE
                # The reason says so wherever the advice itself does not read that block.
                reads_it = rec.freeze == "all" and rec.probe_block == best
                assert (f"also tries a classifier on {best}" in " ".join(rec.reasons)) == (
                    best != features.PENULTIMATE and not reads_it), (rec.size, rec.similar)


def test_large_datasets_are_told_to_fine_tune(digits):
    m = recommend.measure(SPEC, digits)
    big = dataclasses.replace(m, per_class=float(recommend.SMALL_PER_CLASS))
    rec = recommend.recommend(big, SPEC)
    assert rec.size == "large" and rec.freeze != "all" and rec.freeze < len(zoo.blocks_of(SPEC)) // 2


def test_validation_labels_are_not_used(digits):
    before = recommend.measure(SPEC, digits)
    shuffled = dataclasses.replace(digits, labels=digits.labels.clone())
    val = shuffled.val_idx
    shuffled.labels[val] = shuffled.labels[val][torch.randperm(len(val), generator=torch.Generator().manual_seed(0))]
    after = recommend.measure(SPEC, shuffled)
    assert after.leep == pytest.approx(before.leep)
    assert [v for _, v in after.logme_by_block] == pytest.approx([v for _, v in before.logme_by_block])


def test_model_scores_and_rank_agreement(digits):
    scores = recommend.score_model(SPEC, digits)
    assert set(scores) == {"model", "block", "logme", "leep", "nce", "h_score", "seconds"}
    assert scores["block"] == "penultimate" and scores["seconds"] > 0
    assert scores["leep"] == pytest.approx(recommend.measure(SPEC, digits).leep)
    assert recommend.rank_agreement([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4]) == {"kendall_tau": 1.0, "spearman_rho": 1.0}
    assert recommend.rank_agreement([4, 3, 2, 1], [0.1, 0.2, 0.3, 0.4])["kendall_tau"] == -1.0
    assert all(v != v for v in recommend.rank_agreement([1, 2], [0.1, 0.2]).values())  # NaN: too few


def test_a_measurement_without_the_batchnorm_pass_is_the_same_less_its_gaps(digits):
    """The Strategy page shows the advice first and fills the BatchNorm gaps (a second, longer pass) in last."""
    whole = recommend.measure(SPEC, digits)
    first = recommend.measure(SPEC, digits, batchnorm=False)
    assert first.batchnorm_gap == [] and whole.batchnorm_gap
    assert dataclasses.replace(first, batchnorm_gap=whole.batchnorm_gap) == whole
    gaps = recommend.batchnorm_gaps(SPEC, digits)
    assert gaps == whole.batchnorm_gap
    rec, full = recommend.recommend(first, SPEC), recommend.recommend(whole, SPEC)
    assert (rec.strategy, rec.freeze, rec.probe_block) == (full.strategy, full.freeze, full.probe_block)
    assert not any("BatchNorm" in r for r in rec.reasons)


def test_too_few_images_to_score_are_refused_saying_why():
    """2 training images of 2 classes gave LogME −inf and advice as if it meant something."""
    tiny = data.load("digits", size=32, max_per_class=1)  # 10 images: 1 per class, all in training
    for score in (lambda: recommend.measure(SPEC, tiny, batchnorm=False), lambda: recommend.score_model(SPEC, tiny)):
        with pytest.raises(data.DatasetError, match=r"10 training images for 10 classes are too few .* at least 2"):
            score()


def test_a_measurement_counts_both_passes_as_one_progress():
    dataset = data.load("digits", size=32, max_per_class=8)  # not measured yet in this module
    seen = []
    recommend.measure(SPEC, dataset, on_step=lambda done, total: seen.append((done, total)))
    total = len(dataset.train_idx) + features.batchnorm_images(dataset)
    assert {t for _, t in seen} == {total} and seen[-1][0] == total
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_blocks_of_different_widths_are_compared_by_the_full_models_evidence():
    """With fewer training images than channels, the published LogME rises with the width even on
    noise: it would always point at the widest block (the 1,280-wide penultimate)."""
    from tlcore import transferability

    few = data.load("digits", size=32, max_per_class=10)  # 80 training images
    m = recommend.measure(SPEC, few, batchnorm=False)
    rows, y = recommend._scored_split(few)
    penultimate = features.extract(SPEC, few)[rows].numpy()
    assert m.logme_by_block[-1] == (features.PENULTIMATE, pytest.approx(transferability.logme(penultimate, y,
                                                                                              full_rank=True)))
    assert transferability.logme(penultimate, y) > m.logme_by_block[-1][1] + 1  # what it would have said
    assert recommend.score_model(SPEC, few)["logme"] == pytest.approx(m.logme_by_block[-1][1])


def test_results_within_a_standard_error_or_an_image_of_the_best_are_tied():
    assert recommend.accuracy_se(0.9, 100) == pytest.approx(0.03)
    assert recommend.tied_best([1.0, 1.0, 0.75, 1.0], 40) == [0, 1, 3]  # all perfect: tied, not "the first"
    assert recommend.tied_best([1.0, 0.975, 0.95], 40) == [0, 1]  # one image of 40 is chance
    # digits, 359 validation images: 0.942 against 0.911 is 2.6 standard errors, 0.936 is one.
    assert recommend.tied_best([0.942, 0.936, 0.911], 359) == [0, 1]


def test_what_imagenet_sees_in_each_class_is_the_heads_mean_prediction(faces):
    seen = dict(recommend.what_imagenet_sees(SPEC, faces, top=3))
    assert list(seen) == faces.classes and all(len(v) == 3 for v in seen.values())
    for top in seen.values():
        probs = [p for _, p in top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    names = zoo.imagenet_categories()
    assert all(label in names for top in seen.values() for label, _ in top)
    faces_first = seen[next(c for c in faces.classes if "non" not in c)][0][1]
    assert faces_first > 1 / 1000  # a pretrained head is sure of something on faces


def test_the_courses_reference_datasets_land_where_the_course_puts_them(digits):
    """Seed 004: VOC'07 (250 per class) is a "small" dataset, Food-101 (about 1,000) a "medium" one."""
    m = recommend.measure(SPEC, digits, batchnorm=False)
    for name, (per_class, size) in recommend.REFERENCE_DATASETS.items():
        rec = recommend.recommend(dataclasses.replace(m, per_class=per_class), SPEC)
        assert rec.size == ("small" if size == "small" else "large"), name
        assert "VOC'07 has 250 per class, 'small' in the course" in rec.reasons[0]


def test_the_size_reason_names_a_much_smaller_smallest_class(digits):
    m = recommend.measure(SPEC, digits)
    assert m.smallest_class == int(torch.bincount(digits.labels[digits.train_idx]).min())
    uneven = recommend.recommend(dataclasses.replace(m, per_class=38.5, smallest_class=24), SPEC).reasons[0]
    assert uneven.startswith("38.5 training images per class (median; the smallest class has 24) — small")
    even = recommend.recommend(dataclasses.replace(m, per_class=38.5, smallest_class=37), SPEC).reasons[0]
    assert even.startswith("38.5 training images per class (median) — small")


def test_the_advice_is_one_named_trial_of_the_validation(digits):
    m = recommend.measure(SPEC, digits)
    n = len(zoo.blocks_of(SPEC))
    for per_class, similarity, expected in ((20.0, 0.9, "linear probe (frozen features)"),
                                            (float(recommend.SMALL_PER_CLASS), 0.9, "advised setting")):
        rec = recommend.recommend(dataclasses.replace(m, per_class=per_class, similarity=similarity), SPEC)
        assert recommend.advised_strategy(rec) == expected
        cfg = recommend.validation_trials(rec, epochs=1)[expected]
        assert (cfg.freeze, cfg.pretrained) == (rec.freeze, True) and (rec.freeze == "all" or rec.freeze < n)
