"""Float32 renders and dreams run a copy of the model with its BatchNorms folded into the convolutions."""

import torch
from torch import nn

from tlcore import zoo
from tlcore.fold import folded
from tlcore.hooks import Capture, Target, module_at


def test_a_folded_lite0_computes_what_the_model_does_without_batchnorms():
    model = zoo.load(zoo.get_spec("efficientnet_lite0")).eval()
    kept = "_blocks.3._project_conv"  # a conv a render reads keeps its own output
    copy = folded(model, keep=(kept,))
    assert copy is not model and folded(model, keep=(kept,)) is copy  # made once per model and layers
    assert folded(model, dtype=torch.bfloat16) is model  # a mixed-precision pass runs the model as it is
    assert folded(model, keep=("_blocks.8",)) is folded(model, keep=("_blocks.10",))  # blocks keep no pair: one copy
    left = [n for n, m in copy.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert left == ["_blocks.3._bn2"]  # the kept conv's own BatchNorm
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), copy(x), rtol=1e-4, atol=1e-4)
        reads = []
        for m in (model, copy):
            with Capture(m, [Target(kept, module_at(m, kept)), Target("_blocks.10", module_at(m, "_blocks.10"))],
                         stop=False) as cap:
                reads.append(cap(x))
    assert torch.allclose(reads[0][kept], reads[1][kept], rtol=1e-4, atol=1e-4)  # before its BatchNorm, as read
    assert torch.allclose(reads[0]["_blocks.10"], reads[1]["_blocks.10"], rtol=1e-4, atol=1e-4)
    assert all(p.requires_grad for p in model.parameters())  # the shared model is untouched
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_a_hook_registered_on_the_model_after_a_fold_runs_on_the_folded_copy():
    model = zoo.load(zoo.get_spec("efficientnet_lite0")).eval()
    before = folded(model)
    seen = []
    handle = model._blocks[2].register_forward_hook(lambda m, a, out: seen.append(out.shape))
    try:
        after = folded(model)
        seen.clear()  # the fold's own check ran both
        with torch.no_grad():
            after(torch.randn(1, 3, 64, 64))
    finally:
        handle.remove()
    assert after is not before and len(seen) == 1
    assert folded(model) is before  # the hook gone: the first copy serves again


class BatchNormFirst(nn.Module):
    """A conv registered right before a BatchNorm that runs before it, not after."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        return self.conv(self.bn(x))


def test_a_model_whose_batchnorm_does_not_follow_its_conv_is_used_as_it_is():
    model = BatchNormFirst().eval()
    assert folded(model) is model


def test_float32_features_come_from_a_folded_copy_and_equal_the_models(monkeypatch):
    """Every feature pass in float32 (a CPU without AMX; a float32 trial's probe) reads a folded copy;
    a layer it reads keeps its BatchNorm, so what it reads is the model's own activation."""
    from tlcore import data, features

    spec = zoo.get_spec("efficientnet_lite0")
    model = zoo.load(spec).eval()
    ds = data.load("digits", size=32, max_per_class=3)
    ran = []
    fold = features.folded
    monkeypatch.setattr(features, "folded", lambda *a, **kw: ran.append(fold(*a, **kw)) or ran[-1])
    conv = "_blocks.3._project_conv"
    got = features.extract_many(spec, ds, [features.PENULTIMATE, conv], model=model, mixed=False)
    assert ran and ran[0] is not model
    x = features.normalise(ds.images, spec, features.input_size(spec, ds))
    with torch.no_grad(), Capture(model, [features.hook_target(model, spec, features.PENULTIMATE),
                                          features.hook_target(model, spec, conv)], stop=False) as cap:
        want = {k: features.pool(v, spec.family) for k, v in cap(x).items()}
    # Folding reorders float32 rounding through ~50 layers: up to 1.7e-5 apart on features of 0…5 on an
    # AVX2 CPU (less with AVX-512); a wrong fold is off by far more than 1e-4.
    for block in (features.PENULTIMATE, conv):
        assert torch.allclose(got[block], want[block], rtol=1e-4, atol=1e-4), block


def test_a_model_folding_cannot_help_is_used_as_it_is_and_not_kept_alive(monkeypatch):
    import gc
    import weakref

    from tlcore import fold

    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()  # no BatchNorm to fold
    assert folded(plain) is plain and folded(plain) is plain  # the second from the cache
    alive = weakref.ref(plain)
    del plain
    gc.collect()
    assert alive() is None  # a cached "as it is" must not hold its own key

    model = zoo.load(zoo.get_spec("efficientnet_lite0")).eval()
    assert folded(model.to("meta")) is model  # not on a CPU (a GPU's float32 is TF32 by default)
    model = zoo.load(zoo.get_spec("efficientnet_lite0")).eval()
    monkeypatch.setattr(fold, "MAX_BYTES", 1000)
    assert folded(model) is model  # too large to keep a second copy of
