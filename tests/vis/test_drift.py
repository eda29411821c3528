"""What fine-tuning changed: linear CKA, and the drift curve of kept runs."""

import pytest
import torch

from tlcore import data, zoo
from tlcore.finetune import TrialConfig, run_trial
from tlcore.vis.drift import drift, finetuned_model, linear_cka


def reference_cka(x, y):
    """Kornblith et al.'s HSIC form: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = XXᵀ, L = YYᵀ."""
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, g = x.double() @ x.double().T, y.double() @ y.double().T

    def hsic(a, b):
        return torch.trace(a @ h @ b @ h)

    return float(hsic(k, g) / torch.sqrt(hsic(k, k) * hsic(g, g)))


@pytest.mark.parametrize(("n", "p", "q"), [(50, 8, 12), (20, 64, 30)])  # feature form and Gram form
def test_linear_cka_matches_the_papers_definition(n, p, q):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, p, generator=gen)
    y = x[:, :1] * torch.randn(1, q, generator=gen) + torch.randn(n, q, generator=gen)
    assert linear_cka(x, y) == pytest.approx(reference_cka(x, y), abs=1e-10)


def test_linear_cka_invariances():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 10, generator=gen)
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=gen))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0, abs=1e-10)  # rotation, scale, shift
    assert linear_cka(x, torch.randn(40, 10, generator=gen)) < 0.6
    with pytest.raises(ValueError):
        linear_cka(x, x[:5])


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", size=32, max_per_class=12)


@pytest.mark.parametrize("k", [2, 5])
def test_drift_is_one_through_the_frozen_blocks_and_below_after(lite, digits, k):
    spec, model = lite
    cfg = TrialConfig(model=spec.key, freeze=k, epochs=1, lr=0.05, backbone_lr_mult=1.0, batch_size=16)
    result = run_trial(cfg, digits, model=model, keep_weights=True)
    tuned = finetuned_model(spec, result.config, result.state_dict, len(digits.classes))
    curve = drift(spec, digits, result.config, tuned=tuned, tag=f"test-freeze{k}", base=model)
    assert curve.frozen == k and len(curve.cka) == len(zoo.blocks_of(spec)) - 1
    assert all(c == pytest.approx(1.0, abs=1e-9) for c in curve.cka[:k]), curve.cka
    assert all(c < 1.0 - 1e-4 for c in curve.cka[k:]), curve.cka


def test_a_linear_probe_leaves_every_block_as_it_was(lite, digits):
    spec, model = lite
    curve = drift(spec, digits, {"freeze": "all", "pretrained": True}, tuned=None, tag="probe", base=model)
    assert curve.frozen == len(curve.blocks) and curve.cka == pytest.approx([1.0] * len(curve.blocks))
    with pytest.raises(ValueError, match="linear probe"):
        finetuned_model(spec, {"freeze": "all"}, {}, 10)


def test_a_run_from_scratch_has_nothing_to_compare_with(lite, digits):
    spec, model = lite
    with pytest.raises(ValueError, match="from scratch"):
        drift(spec, digits, {"freeze": 0, "pretrained": False}, tuned=model, tag="scratch", base=model)


def test_drift_reports_both_passes_as_one_count(lite, digits):
    spec, model = lite
    cfg = TrialConfig(model=spec.key, freeze=3, epochs=1, lr=0.05, backbone_lr_mult=1.0, batch_size=16)
    result = run_trial(cfg, digits, model=model, keep_weights=True)
    tuned = finetuned_model(spec, result.config, result.state_dict, len(digits.classes))
    seen = []
    drift(spec, digits, result.config, tuned=tuned, tag="test-progress", base=model,
          on_step=lambda done, total: seen.append((done, total)))
    n = len(digits)
    totals = {t for _, t in seen}
    done = [d for d, _ in seen]
    assert totals == {2 * n} and done == sorted(done) and done[-1] == 2 * n
    assert n in done or seen[0][0] > n  # the tuned pass counts after the pretrained one
