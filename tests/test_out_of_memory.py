"""Out of device memory (simulated on the CPU by raising the error from a patched step): a trial
halves its batch and goes on, a render splits its gallery, and one image too many is a message."""

import pytest
import torch
from torch import nn

from tlcore import data, zoo
from tlcore.device import TooLargeForDevice
from tlcore.finetune import TrialConfig, run_trial
from tlcore.vis import render


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", size=32, max_per_class=20)


class _Tight(nn.Module):
    """Wraps a head: batches larger than ``fits`` raise the CUDA out-of-memory error."""

    def __init__(self, inner: nn.Module, fits: int):
        super().__init__()
        self.inner, self.fits, self.refused = inner, fits, 0

    def forward(self, x):
        if x.shape[0] > self.fits:
            self.refused += 1
            raise self.error()
        return self.inner(x)

    def folded(self) -> nn.Module:  # the probe's head as the run keeps it
        return self.inner.folded()

    @staticmethod
    def error() -> Exception:
        return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def _tight_probe(monkeypatch, fits: int) -> list[_Tight]:
    from tlcore.finetune import trial

    made, original = [], trial._linear_probe

    def probe(*args, **kw):
        head, prepare = original(*args, **kw)
        made.append(_Tight(head, fits))
        return made[-1], prepare

    monkeypatch.setattr(trial, "_linear_probe", probe)
    return made


def test_a_trial_halves_its_batch_and_goes_on(digits, monkeypatch):
    made = _tight_probe(monkeypatch, fits=8)
    result = run_trial(TrialConfig(model="efficientnet_lite0", freeze="all", epochs=3, lr=0.1, batch_size=32), digits)
    assert made[0].refused == 2  # 32 → 16 → 8, once each, then the rest of the trial at 8
    assert result.timings.batch_size == 8 and len(result.history) == 3
    assert result.val_acc > 0.3  # chance 0.1: it trained on every image, not on a lost batch


def test_an_apple_gpus_out_of_memory_error_halves_the_batch_too(digits, monkeypatch):
    """MPS says it with a plain RuntimeError; any other RuntimeError still fails the trial."""
    from tlcore.device import out_of_memory

    mps = RuntimeError("MPS backend out of memory (MPS allocated: 17.8 GB, other allocations: 1.2 GB, "
                       "max allowed: 18.1 GB). Tried to allocate 256.00 MB on private pool.")
    assert out_of_memory(mps) and out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert out_of_memory(RuntimeError("CUDA error: out of memory"))  # cuBLAS/cuDNN without a workspace
    assert out_of_memory(RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
    assert out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED"))
    assert not out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    monkeypatch.setattr(_Tight, "error", staticmethod(lambda: RuntimeError(str(mps))))
    made = _tight_probe(monkeypatch, fits=8)
    result = run_trial(TrialConfig(model="efficientnet_lite0", freeze="all", epochs=1, lr=0.1, batch_size=32), digits)
    assert made[0].refused == 2 and result.timings.batch_size == 8
    monkeypatch.setattr(_Tight, "error", staticmethod(lambda: RuntimeError("a shape error")))
    with pytest.raises(RuntimeError, match="a shape error"):
        run_trial(TrialConfig(model="efficientnet_lite0", freeze="all", epochs=1, lr=0.1, batch_size=32), digits)


@pytest.mark.parametrize("batch_size, rate_share", [(None, 0.25), (32, 1.0)])
def test_an_automatic_batch_takes_its_rates_down_with_it_and_a_chosen_one_keeps_them(
        batch_size, rate_share, digits, monkeypatch):
    from tlcore.finetune import trial

    _tight_probe(monkeypatch, fits=8)
    optimizers, original = [], trial.optim.optimizer
    monkeypatch.setattr(trial.optim, "optimizer", lambda *a, **k: optimizers.append(original(*a, **k)) or optimizers[-1])
    cfg = TrialConfig(model="efficientnet_lite0", freeze="all", epochs=1, lr=0.1, batch_size=batch_size,
                      schedule="constant")
    result = run_trial(cfg, digits, device="cpu")  # automatic on a CPU: 32, the rates as given
    assert result.timings.batch_size == 8
    assert optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * rate_share)  # 32 → 8: a quarter


def test_a_retried_batch_leaves_the_cached_prefix_whole(digits, monkeypatch):
    from tlcore import features
    from tlcore.finetune import prefix_cache, trial

    made, original = [], trial._prefix_once_or_live

    def tight(*args, **kw):
        tail, prepare = original(*args, **kw)
        made.append((_Tight(tail, 8), prepare))
        return made[-1]

    monkeypatch.setattr(trial, "_prefix_once_or_live", tight)
    monkeypatch.setattr(prefix_cache, "RECENT", prefix_cache.RecentStores())  # compute the prefix here
    spec = zoo.get_spec("efficientnet_lite0")
    last = len(zoo.blocks_of(spec)) - 1
    result = run_trial(TrialConfig(model="efficientnet_lite0", freeze=last, epochs=3, batch_size=32,
                                   precision="float32"), digits)
    tail, sampler = made[0]
    assert tail.refused == 2 and result.timings.batch_size == 8
    store = sampler.store
    assert store.ready == min(3, len(store.acts))  # every view the epochs used is complete…
    with torch.no_grad():  # …and view 0 holds the prefix's output for every image, not leftovers
        plain = sampler.prefix(features.normalise(sampler.images, spec, sampler.size))
    # float32 on a GPU still means TF32 convolutions (torch's default), whose rounding differs
    # between the store's batches of 8 and this one batch; a leftover row would be far off either way.
    tol = 1e-4 if sampler.dev.type == "cpu" else 1e-2
    torch.testing.assert_close(store.acts[0].float().cpu(), plain.float().cpu(), rtol=tol, atol=tol)


def test_a_trial_that_does_not_fit_even_one_image_says_so(digits, monkeypatch):
    _tight_probe(monkeypatch, fits=0)
    with pytest.raises(TooLargeForDevice, match="out of memory even for one image: load the dataset at a smaller resolution, freeze more"):
        run_trial(TrialConfig(model="efficientnet_lite0", freeze="all", epochs=1, batch_size=4), digits)


def test_a_gallery_is_split_on_out_of_memory_and_gives_the_same_images(monkeypatch):
    spec = zoo.get_spec("efficientnet_lite0")
    model = zoo.load(spec)
    cfg = render.RenderConfig(layer="_blocks.1", steps=3, size=32)
    whole = render.render(spec, model, cfg, [0, 1, 2, 3], use_cache=False)
    original, sizes = render._optimise, []

    def tight(model, spec, cfg, targets, *args):
        sizes.append(len(targets))
        if len(targets) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return original(model, spec, cfg, targets, *args)

    monkeypatch.setattr(render, "_optimise", tight)
    split = render.render(spec, model, cfg, [0, 1, 2, 3], use_cache=False)
    assert sizes == [4, 2, 1, 1, 2, 1, 1]
    for a, b in zip(whole, split, strict=True):
        assert a.target == b.target and abs(a.image.astype(int) - b.image.astype(int)).max() <= 1
    monkeypatch.setattr(render, "_optimise", lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("oom")))
    with pytest.raises(TooLargeForDevice, match="out of memory even for one image at 32 px"):
        render.render(spec, model, cfg, [0], use_cache=False)


@pytest.mark.parametrize("fused, scaled", [(False, True), (True, True), (True, False)])
def test_a_loss_scaled_step_retried_after_out_of_memory_updates_as_a_clean_one(fused, scaled, monkeypatch):
    """fp16 trials scale the loss. A step that runs out of memory leaves GradScaler's bookkeeping
    half done (gradients marked unscaled; a fused optimizer holding the scale): the retried
    batch's step must move the weights exactly as a step that never failed (the CPU's GradScaler
    stands in for a GPU's). bf16 and fp32 trials have a disabled scaler, which keeps no state."""
    from tlcore.finetune.engine import _step

    class _Sched:
        def advance(self, images):
            pass

    def one_step(fail_first: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=fused)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, enabled=scaled)
        x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
        if fail_first:
            real = opt.step

            def refuse(*args, **kw):
                monkeypatch.setattr(opt, "step", real)  # once
                raise torch.OutOfMemoryError("CUDA out of memory (test)")

            monkeypatch.setattr(opt, "step", refuse)
            with pytest.raises(torch.OutOfMemoryError):
                _step(opt, _Sched(), scaler, nn.functional.cross_entropy(model(x), y), 8)
        _step(opt, _Sched(), scaler, nn.functional.cross_entropy(model(x), y), 8)
        return model.weight.detach().clone()

    torch.testing.assert_close(one_step(fail_first=True), one_step(fail_first=False))


def test_out_of_memory_on_the_first_image_is_not_called_a_resolution_problem(digits, monkeypatch):
    from tlcore.finetune import trial

    def full(*args, **kw):
        raise torch.OutOfMemoryError("CUDA out of memory (test)")

    monkeypatch.setattr(trial.features, "normalise", full)
    with pytest.raises(TooLargeForDevice, match="out of memory even for one image"):
        run_trial(TrialConfig(model="efficientnet_lite0", freeze="all", epochs=1), digits)
