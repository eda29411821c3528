"""Trials learn, never touch the shared model, respect the freeze depth, and refuse bad input."""

import dataclasses
import math

import pytest
import torch

from tlcore import data, features, zoo
from tlcore.device import pick_device
from tlcore.finetune import (
    AUTO_MAX_BATCH,
    AUTO_MIN_STEPS,
    DEFAULT_BATCH,
    DEFAULT_LR,
    PROBE_LR,
    TrialCancelled,
    TrialConfig,
    augment,
    auto_batch,
    run_trial,
)


@pytest.fixture(scope="module")
def digits():
    return data.load("digits", size=32, max_per_class=30)


def test_linear_probe_learns_well_above_chance(digits):
    shared = zoo.load(zoo.get_spec("efficientnet_lite0"))
    before = {k: v.clone() for k, v in shared.state_dict().items()}
    result = run_trial(TrialConfig(model="efficientnet_lite0", freeze="all", epochs=8, lr=0.05), digits,
                       model=shared)
    # The shared model is read, not copied: it must come back untouched and without hooks.
    assert all(torch.equal(before[k], v) for k, v in shared.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in shared.modules())
    assert result.val_acc > 0.5  # chance is 0.1
    assert result.trainable_params == 1280 * 10 + 10
    lite0 = sum(p.numel() for p in shared.parameters())  # with ImageNet's 1,000-class classifier
    assert result.total_params == lite0 - (1280 * 1000 + 1000) + result.trainable_params
    assert sum(map(sum, result.confusion)) == len(digits.val_idx)
    assert len(result.history) == 8 and result.timings.features_s is not None


def test_a_linear_probe_reads_a_shared_model_on_its_device_without_copying_it(digits, monkeypatch):
    import copy

    from tlcore import fold
    from tlcore.device import pick_device

    dev = pick_device()
    shared = zoo.load(zoo.get_spec("efficientnet_lite0"), device=dev)  # as the app holds it: on "cuda:0"
    original = copy.deepcopy

    def deepcopy(obj, *args):
        assert obj is not shared, "the shared model was copied"
        return original(obj, *args)

    monkeypatch.setattr(copy, "deepcopy", deepcopy)  # however the trial would copy it
    # A float32 pass on a CPU reads a folded copy instead (tlcore.fold: deliberate, cached, read
    # only): folding is off here, so this checks the trial itself.
    monkeypatch.setattr(fold, "MAX_BYTES", 0)
    result = run_trial(TrialConfig(model="efficientnet_lite0", freeze="all", epochs=1), digits, model=shared,
                       device=dev)
    assert result.history


def test_a_run_records_the_precision_it_computed_in(digits, monkeypatch):
    """The config's "bfloat16" asks for mixed precision; what ran is recorded beside it."""
    from tlcore.finetune import prefix_cache

    cfg = TrialConfig(model="efficientnet_lite0", freeze="all", epochs=1, precision="bfloat16")
    monkeypatch.setattr(prefix_cache, "mixed_dtype", lambda dev: None)  # a CPU without AMX: no mixed precision
    assert run_trial(cfg, digits, device="cpu").timings.precision == "float32"
    monkeypatch.setattr(prefix_cache, "mixed_dtype", lambda dev: torch.float16)  # a GPU without bfloat16
    assert run_trial(cfg, digits, device="cpu").timings.precision == "float16"
    float32 = TrialConfig(model="efficientnet_lite0", freeze="all", epochs=1, precision="float32")
    assert run_trial(float32, digits, device="cpu").timings.precision == "float32"


@pytest.mark.parametrize("precision, autocast_on", [("float32", False), ("auto", True)])
def test_a_linear_probe_reads_features_in_its_own_precision(precision, autocast_on, monkeypatch):
    """On a GPU "auto" computes the probe's features in bf16 and "float32" must not: CPU autocast
    with bf16 stands in for the GPU's (both modules' mixed_dtype patched)."""
    from tlcore import device, features

    small = data.load("digits", size=32, max_per_class=4)
    monkeypatch.setattr(device, "mixed_dtype", lambda dev: torch.bfloat16)
    monkeypatch.setattr(features, "mixed_dtype", lambda dev: torch.bfloat16)
    monkeypatch.setattr(features, "_cached", lambda key, private: None)  # computed here, not read
    shared = zoo.load(zoo.get_spec("efficientnet_lite0"))
    seen = []
    first_conv = next(m for m in shared.modules() if isinstance(m, torch.nn.Conv2d))  # the feature pass
    handle = first_conv.register_forward_hook(lambda m, a, out: seen.append(torch.is_autocast_enabled("cpu")))
    try:
        run_trial(TrialConfig(model="efficientnet_lite0", freeze="all", epochs=1, precision=precision), small,
                  model=shared, device="cpu")
    finally:
        handle.remove()
    assert len(seen) > 1 and set(seen[1:]) == {autocast_on}  # after the one-image input check


def test_a_linear_probes_head_trains_in_float32_beside_mixed_features(monkeypatch):
    monkeypatch.setenv("TLCORE_CPU_BF16", "1")  # a CPU with AMX (a GPU does the same)
    small = data.load("digits", size=32, max_per_class=4)
    seen, forward = [], torch.nn.Linear.forward

    def recorded(self, x):
        seen.append((torch.is_autocast_enabled("cpu"), x.dtype))
        return forward(self, x)

    monkeypatch.setattr(torch.nn.Linear, "forward", recorded)  # Lite0's only Linear is the new head
    result = run_trial(TrialConfig(model="efficientnet_lite0", freeze="all", epochs=1), small, device="cpu")
    assert (result.timings.precision, result.timings.trained_in) == ("bfloat16", "float32")  # features, head
    assert seen and set(seen) == {(False, torch.float32)}


@pytest.mark.parametrize("size", [64, 32])
def test_an_amx_cpu_runs_the_prefix_in_bf16_and_trains_the_tail_in_it_from_64_px_with_depthwise_convs_in_float32(
        monkeypatch, size):
    from torch.overrides import TorchFunctionMode

    from tlcore.finetune import engine, prefix_cache

    class ConvSpy(TorchFunctionMode):  # (groups > 1, output dtype) of each convolution a training step runs
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func is torch.conv2d and torch.is_grad_enabled():
                convs.append((args[6] > 1, out.dtype))
            return out

    monkeypatch.setenv("TLCORE_CPU_BF16", "1")
    monkeypatch.setattr(zoo, "smallest_input", lambda spec: 8)  # Lite0 reads 32 px as they are: the rule's case
    small = data.load("digits", size=size, max_per_class=6)
    prefix_runs, tail_steps, convs = [], [], []
    prefix_of, batch = prefix_cache.ViewSampler._prefix_of, engine._batch

    def prefix_spy(self, v, idx, step):
        hook = self.prefix.register_forward_pre_hook(lambda m, a: prefix_runs.append(torch.is_autocast_enabled("cpu")))
        try:
            out = prefix_of(self, v, idx, step)
        finally:
            hook.remove()
        prefix_runs.append(out.dtype)  # what the tail is fed
        return out

    def batch_spy(loop, rows, train, step):
        with engine.mixed_precision(loop):
            tail_steps.append(torch.is_autocast_enabled("cpu"))
        with ConvSpy():
            return batch(loop, rows, train, step)

    monkeypatch.setattr(prefix_cache.ViewSampler, "_prefix_of", prefix_spy)
    monkeypatch.setattr(engine, "_batch", batch_spy)
    n_blocks = len(zoo.blocks_of(zoo.get_spec("efficientnet_lite0")))
    result = run_trial(TrialConfig(model="efficientnet_lite0", freeze=n_blocks - 3, epochs=1, seed=11), small,
                       device="cpu")
    trains_in = torch.bfloat16 if size >= engine.CPU_MIXED_TRAINING_MIN_PX else torch.float32
    assert result.timings.prefix_cached
    assert (result.timings.precision, result.timings.trained_in) == ("bfloat16", str(trains_in)[6:])
    assert True in prefix_runs and set(prefix_runs) - {True} == {trains_in}  # the tail is fed what it trains in
    assert tail_steps and set(tail_steps) == {trains_in is torch.bfloat16}
    assert set(convs) == {(True, torch.float32), (False, trains_in)}  # depthwise ones, the rest


@pytest.mark.parametrize("size", [32, 64])
def test_a_trial_without_a_cached_prefix_records_its_frozen_layers_in_the_training_precision(monkeypatch, size):
    monkeypatch.setenv("TLCORE_CPU_BF16", "1")  # an AMX CPU: from 64 px it trains in bf16, below in float32
    monkeypatch.setattr(zoo, "smallest_input", lambda spec: 8)  # Lite0 reads 32 px as they are: the rule's case
    small = data.load("digits", size=size, max_per_class=4)
    result = run_trial(TrialConfig(model="efficientnet_lite0", freeze=0, epochs=1), small, device="cpu")
    expected = "bfloat16" if size >= 64 else "float32"
    assert not result.timings.prefix_cached
    assert (result.timings.precision, result.timings.trained_in) == (expected, expected)


def test_partial_freeze_trains_only_the_tail_and_copies_the_shared_model(digits):
    spec = zoo.get_spec("efficientnet_lite0")
    shared = zoo.load(spec)
    before = {k: v.clone() for k, v in shared.state_dict().items()}
    cfg = TrialConfig(model=spec.key, freeze=7, epochs=1, lr=0.05, augment=("flip", "crop"))
    result = run_trial(cfg, digits, model=shared, keep_weights=True)
    assert all(torch.equal(before[k], v) for k, v in shared.state_dict().items())
    tail = sum(b.params for b in zoo.blocks_of(spec)[7:]) - (1280 * 1000 + 1000) + (1280 * 10 + 10)
    assert result.trainable_params == tail
    stem = "_conv_stem.weight"  # frozen: unchanged in the trained weights
    assert torch.equal(result.state_dict[stem], before[stem])
    assert not torch.equal(result.state_dict["_conv_head.weight"], before["_conv_head.weight"])


@pytest.fixture(scope="module")
def shapes():
    return data.load("shapes", size=48, max_per_class=40)  # 4 separable classes, 32 validation images


def test_full_fine_tune_learns_and_beats_training_from_scratch(shapes):
    # Thome's tables in small: on little data, pretrained weights win. Chance is 0.25.
    tuned, scratch = (run_trial(TrialConfig(model="efficientnet_lite0", pretrained=pretrained, freeze=0, epochs=5,
                                            optimizer="adamw", lr=2e-3 if pretrained else 6e-3), shapes)
                      for pretrained in (True, False))
    for result in (tuned, scratch):
        assert result.trainable_params == result.total_params  # the network as trained, its new head included
    assert tuned.val_acc >= 0.5 and scratch.val_acc < tuned.val_acc


def test_cancel_stops_between_batches(digits):
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(TrialCancelled):
        run_trial(TrialConfig(model="efficientnet_lite0", freeze=7, epochs=3, batch_size=16), digits,
                  should_stop=stop)


def test_bad_configs_name_the_valid_choices(digits):
    with pytest.raises(ValueError, match="freeze must be 0…8 or 'all'"):
        run_trial(TrialConfig(model="efficientnet_lite0", freeze=12), digits)
    with pytest.raises(ValueError, match="unknown augmentation"):
        run_trial(TrialConfig(model="efficientnet_lite0", augment=("mixup",)), digits)


def test_the_learning_rate_suits_the_freeze_depth_unless_chosen():
    assert TrialConfig(model="efficientnet_lite0", freeze="all").lr == PROBE_LR
    assert TrialConfig(model="efficientnet_lite0", freeze=3).lr == DEFAULT_LR != PROBE_LR
    assert TrialConfig(model="efficientnet_lite0", freeze="all", lr=0.5).lr == 0.5


@pytest.mark.parametrize(("n_train", "kind", "batch"), [
    (100_000, "cpu", DEFAULT_BATCH),  # compute-bound on a CPU: the batch stays
    (100, "cuda", DEFAULT_BATCH), (2 * DEFAULT_BATCH * AUTO_MIN_STEPS - 1, "cuda", DEFAULT_BATCH),
    (2 * DEFAULT_BATCH * AUTO_MIN_STEPS, "cuda", 2 * DEFAULT_BATCH), (1600, "cuda", 2 * DEFAULT_BATCH),
    (100_000, "cuda", AUTO_MAX_BATCH), (100_000, "mps", AUTO_MAX_BATCH),
])
def test_an_automatic_batch_grows_on_a_gpu_only_while_epochs_keep_their_updates(n_train, kind, batch):
    assert auto_batch(n_train, torch.device(kind)) == batch
    assert n_train // batch >= AUTO_MIN_STEPS or batch == DEFAULT_BATCH


def test_an_automatic_batch_scales_the_rates_and_a_chosen_one_is_kept():
    auto = TrialConfig(model="efficientnet_lite0", freeze=3, backbone_lr_mult=0.1)
    assert auto.batch_size is None
    on_gpu = auto.for_run(1600, torch.device("cuda"))  # a plain config: no GPU needed to resolve it
    assert on_gpu.batch_size == 64 and on_gpu.lr == pytest.approx(2 * DEFAULT_LR)
    assert on_gpu.backbone_lr_mult == 0.1  # the backbone's rate follows the head's
    assert auto.for_run(1600, torch.device("cpu")) == dataclasses.replace(auto, batch_size=DEFAULT_BATCH)  # rate kept
    chosen = TrialConfig(model="efficientnet_lite0", freeze=3, batch_size=16)
    assert chosen.for_run(100_000, torch.device("cuda")) is chosen
    with pytest.raises(ValueError, match="batch size must be at least 1"):
        TrialConfig(model="efficientnet_lite0", batch_size=0).check()


def test_a_trial_records_the_batch_and_rate_it_ran_with(digits):
    result = run_trial(TrialConfig(model="efficientnet_lite0", freeze="all", epochs=1), digits)
    dev = pick_device(None)
    expected = auto_batch(len(digits.train_idx), dev)
    assert result.timings.batch_size == expected == result.config["batch_size"]
    assert result.config["lr"] == pytest.approx(PROBE_LR * expected / DEFAULT_BATCH)


def test_no_validation_images_is_refused_not_a_silent_100_percent():
    one_each = data.load("digits", size=16, max_per_class=1)
    with pytest.raises(data.DatasetError, match="at least 2 images"):
        run_trial(TrialConfig(model="efficientnet_lite0"), one_each)


def test_augment_keeps_shape_and_changes_pixels():
    x = torch.rand(8, 3, 16, 16)
    gen = torch.Generator().manual_seed(0)
    y = augment(x, ("flip", "crop"), gen)
    assert y.shape == x.shape and not torch.equal(x, y)


def test_images_too_small_for_the_network_are_enlarged_and_the_result_says_so():
    small = data.load("digits", size=16, max_per_class=5)
    result = run_trial(TrialConfig(model="efficientnet_lite0", epochs=1), small)
    assert result.input_px == zoo.smallest_input(zoo.get_spec("efficientnet_lite0")) == 64
    assert run_trial(TrialConfig(model="efficientnet_lite0", epochs=1), data.load("digits", size=96,
                                                                                   max_per_class=5)).input_px == 96


def test_a_size_the_architecture_cannot_take_is_a_clear_message(monkeypatch):
    monkeypatch.setattr(zoo, "smallest_input", lambda spec: 8)  # as if nothing enlarged the images
    small = data.load("digits", size=16, max_per_class=5)
    with pytest.raises(data.DatasetError, match="cannot take 16px images"):
        run_trial(TrialConfig(model="efficientnet_lite0"), small)


def test_cached_prefix_views_are_computed_as_training_needs_them_and_reused(digits, monkeypatch, request):
    from tlcore.finetune import prefix_cache

    monkeypatch.setattr(prefix_cache, "CPU_MAX_VIEWS", 4)  # four views on every device: two epochs need two
    prefix_cache.RECENT.clear()  # no kept store of the usual two views here, and ours do not outlive the test
    request.addfinalizer(prefix_cache.RECENT.clear)
    cfg = TrialConfig(model="efficientnet_lite0", freeze=7, epochs=2, lr=0.05, augment=("flip", "crop"), seed=3)
    first = run_trial(cfg, digits)
    assert first.timings.prefix_cached and first.timings.prefix_views == 4
    assert first.timings.prefix_views_reused == 0
    again = run_trial(cfg, digits)  # another trial at the same depth: the two views it needs exist
    assert again.timings.prefix_views_reused == 2
    # The same trial: bit for bit on a CPU; on a GPU cuDNN's bf16 weight gradients may sum in
    # another order from run to run.
    same = (lambda a: a) if pick_device(None).type == "cpu" else (lambda a: pytest.approx(a, rel=1e-3, abs=1e-3))
    assert [h.train_loss for h in again.history] == same([h.train_loss for h in first.history])
    assert [h.val_acc for h in again.history] == same([h.val_acc for h in first.history])
    longer = run_trial(TrialConfig(**{**cfg.__dict__, "epochs": 5}), digits)
    assert longer.timings.prefix_views_reused == 2 and len(longer.history) == 5
    assert run_trial(TrialConfig(**{**cfg.__dict__, "epochs": 5}), digits).timings.prefix_views_reused == 4


def test_a_cpu_keeps_two_views_where_a_gpu_keeps_four():
    """On a CPU a view is a whole prefix pass; bench/view_accuracy.py found no accuracy in the other two."""
    from tlcore.finetune.prefix_cache import views

    cpu, gpu = torch.device("cpu"), torch.device("cuda")  # a device object: no GPU needed to ask
    for kinds, on_cpu, on_gpu in ((), 1, 1), (("flip",), 2, 2), (("crop",), 2, 4), (("flip", "crop"), 2, 4):
        cfg = TrialConfig(model="efficientnet_lite0", freeze=7, augment=kinds)
        assert (views(cfg, cpu), views(cfg, gpu)) == (on_cpu, on_gpu), kinds


def test_a_kept_prefix_store_is_not_reused_for_another_split():
    """Augmented views hold the training images only: another validation fraction (same pixels,
    same fingerprint) makes new training images, which a reused store never computed."""
    cfg = TrialConfig(model="efficientnet_lite0", freeze=7, epochs=2, lr=0.05, augment=("flip",), seed=3)
    wide = data.load("digits", size=32, max_per_class=20, val_fraction=0.4)
    narrow = data.load("digits", size=32, max_per_class=20, val_fraction=0.2)
    assert wide.fingerprint == narrow.fingerprint
    run_trial(cfg, wide)
    assert run_trial(cfg, narrow).timings.prefix_views_reused == 0
    assert run_trial(cfg, narrow).timings.prefix_views_reused == 2  # its own split: kept


def test_on_an_accelerator_a_view_is_computed_whole_and_in_smaller_pieces_after_out_of_memory(digits, monkeypatch):
    """The whole-view path (a GPU's), run here on the CPU: the same plain view as batch by batch;
    a piece that runs out of memory is split instead of failing the trial, and its augmentation is
    drawn again from where it started (as if the pieces had been small from the start)."""
    from tlcore.finetune import prefix_cache

    cfg = TrialConfig(model="efficientnet_lite0", freeze=7, epochs=2, lr=0.05, augment=("flip",), seed=3)

    def stores(step: int, tight=None) -> prefix_cache.PrefixStore:
        prefix_cache.RECENT.clear()
        monkeypatch.setattr(prefix_cache, "inference_batch", lambda dev, size: step)
        if tight is not None:
            monkeypatch.setattr(prefix_cache.ViewSampler, "_prefix_of", tight)
        run_trial(cfg, digits)
        return prefix_cache.RECENT.newest()

    lazy = stores(64)
    monkeypatch.setattr(prefix_cache, "_whole_views", lambda dev: True)
    small = stores(16)
    steps, real = [], prefix_cache.ViewSampler._prefix_of

    def tight(self, v, idx, step):
        steps.append((v, step))
        if v == 1 and step > 16:
            gen = self._view_gen(v)  # on the trial's device: a CUDA generator draws on CUDA only
            torch.rand(len(idx), generator=gen, device=gen.device)  # its flips drawn, then out of memory
            raise torch.OutOfMemoryError("out of memory (test)")
        return real(self, v, idx, step)

    whole = stores(64, tight)
    assert whole.ready == 2 and (1, 64) in steps and (1, 32) in steps and (1, 16) in steps
    # Other batch sizes may take other convolution algorithms: float32 agrees to 1e-4, a bf16 store
    # (a GPU's) to its own rounding, 2^-8 relative.
    tol = {"atol": 1e-4, "rtol": 1e-5} if whole.acts[0].dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}
    assert torch.allclose(whole.acts[0].float(), lazy.acts[0].float(), **tol)
    rows = digits.train_idx  # a training view holds the training images only
    assert torch.allclose(whole.acts[1][rows].float(), small.acts[1][rows].float(), **tol)


def test_batchnorm_statistics_that_train_follow_the_data_not_imagenet(digits):
    """EfficientNet-Lite's BatchNorm momentum is 0.01: left alone, a short fine-tune evaluates
    with ImageNet's running statistics. Each epoch's average must be what evaluation sees."""
    from tlcore import features

    spec = zoo.get_spec("efficientnet_lite0")
    cfg = TrialConfig(model=spec.key, freeze=0, epochs=1, lr=0.01, augment=())
    result = run_trial(cfg, digits, keep_weights=True)
    model = zoo.load(spec)
    model._fc = torch.nn.Linear(1280, 10)
    model.load_state_dict(result.state_dict)
    imagenet_mean = zoo.load(spec)._bn0.running_mean
    seen = []
    model._bn0.register_forward_hook(lambda m, args, out: seen.append(args[0].mean(dim=(0, 2, 3))))
    with torch.no_grad():
        model.eval()(features.normalise(digits.images[digits.train_idx], spec, digits.size))
    data_mean = seen[0]
    kept = model._bn0.running_mean
    assert (kept - data_mean).abs().mean() < 0.25 * (imagenet_mean - data_mean).abs().mean()


def test_a_live_batchnorm_averages_the_epochs_batches_without_reading_the_device():
    """The epoch average is momentum=None's (a plain mean of the batches since the reset, restarted
    each epoch), without torch's read of the batch count back from the device at every batch."""
    from tlcore.finetune.surgery import _restart_batchnorm_averages

    dev = pick_device(None)
    ours, reference = torch.nn.BatchNorm2d(3).to(dev), torch.nn.BatchNorm2d(3).to(dev)
    g = torch.Generator().manual_seed(0)
    for _epoch in range(2):
        _restart_batchnorm_averages([ours])
        reference.reset_running_stats()
        reference.momentum = None
        for _ in range(5):
            x = (torch.randn(4, 3, 5, 5, generator=g) * 3 + 7).to(dev)
            ours.train()(x)
            reference.train()(x)
        torch.testing.assert_close(ours.running_mean, reference.running_mean)
        torch.testing.assert_close(ours.running_var, reference.running_var)
    assert len(ours._forward_pre_hooks) == 1  # set up once, restarted each epoch
    assert ours.momentum == pytest.approx(1 / 5)  # a number, not None: torch never reads the count back
    if dev.type == "cuda":
        torch.cuda.set_sync_debug_mode("error")
        try:
            ours(x)  # reference(x) would raise here: float(num_batches_tracked)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_kept_prefix_stores_stay_within_the_memory_budget(digits, monkeypatch):
    from tlcore.finetune import prefix_cache

    cfg = TrialConfig(model="efficientnet_lite0", freeze=6, epochs=1, augment=(), seed=11)
    run_trial(cfg, digits)
    assert run_trial(cfg, digits).timings.prefix_views_reused == 1  # kept while it fits
    one = prefix_cache.RECENT.newest().nbytes
    # Room for one store, not two, on whichever device the trials run (CUDA or CPU).
    monkeypatch.setitem(prefix_cache.BUDGET, pick_device(None).type, one + 1)
    run_trial(TrialConfig(**{**cfg.__dict__, "freeze": 7}), digits)
    assert run_trial(cfg, digits).timings.prefix_views_reused == 0  # evicted by the newer one


def test_a_prefix_store_the_device_cannot_hold_leaves_the_trial_to_run_it_all(digits, monkeypatch):
    from tlcore.finetune import prefix_cache

    def full(*args):
        raise torch.OutOfMemoryError("CUDA out of memory (test)")

    monkeypatch.setattr(prefix_cache, "_buffers", full)
    monkeypatch.setattr(prefix_cache, "RECENT", prefix_cache.RecentStores())
    result = run_trial(TrialConfig(model="efficientnet_lite0", freeze=6, epochs=1, augment=()), digits)
    assert not result.timings.prefix_cached and len(result.history) == 1


def test_a_new_prefix_store_is_made_after_the_older_ones_made_room(digits, monkeypatch):
    """Both at once may not fit the device: the older store goes before the new one is allocated."""
    from types import SimpleNamespace

    from tlcore.finetune import prefix_cache

    recent, dev = prefix_cache.RecentStores(), pick_device(None)
    monkeypatch.setattr(prefix_cache, "RECENT", recent)
    old_key = ("an older trial", str(dev))
    recent.put(old_key, SimpleNamespace(nbytes=prefix_cache.budget(dev) - 1))
    held_when_allocating, real = [], prefix_cache._buffers

    def buffers(*args):
        held_when_allocating.append(recent.get(old_key) is not None)
        return real(*args)

    monkeypatch.setattr(prefix_cache, "_buffers", buffers)
    result = run_trial(TrialConfig(model="efficientnet_lite0", freeze=6, epochs=1, augment=()), digits)
    assert result.timings.prefix_cached and held_when_allocating == [False]


def test_older_prefix_stores_make_room_before_a_new_one_is_made():
    from types import SimpleNamespace

    from tlcore.finetune import prefix_cache

    cap = prefix_cache.budget(torch.device("cpu"))

    def kept(room: int) -> list[bool]:
        recent = prefix_cache.RecentStores(items=3)
        recent.put(("old", "cpu"), SimpleNamespace(nbytes=cap // 2))
        recent.put(("newer", "cpu"), SimpleNamespace(nbytes=cap // 4))
        recent.make_room(room, torch.device("cpu"))
        return [recent.get((name, "cpu")) is not None for name in ("old", "newer")]

    assert kept(cap // 4) == [True, True]  # it all fits: nothing goes
    assert kept(cap // 2) == [False, True]  # the oldest goes first
    assert kept(cap) == [False, False]


def test_a_classifier_on_an_earlier_blocks_features(digits):
    from sklearn.linear_model import LogisticRegression

    spec = zoo.get_spec("efficientnet_lite0")
    result = run_trial(TrialConfig(model=spec.key, freeze="all", probe_block="_blocks.5-7"), digits,
                       keep_weights=True)
    channels = 80  # EfficientNet-Lite0's blocks 5–7 end with 80 channels
    assert result.trainable_params == channels * 10 + 10
    # The default 5 epochs come close to a converged logistic regression on the same standardised
    # features (0.967 here; the probe 0.950); on raw features the probe stopped at 0.800.
    feats, labels, train, val = features.extract(spec, digits, block="_blocks.5-7"), digits.labels, \
        digits.train_idx, digits.val_idx
    mean, std = feats[train].mean(0), feats[train].std(0)
    converged = LogisticRegression(max_iter=3000).fit(((feats[train] - mean) / std).numpy(), labels[train].numpy())
    assert result.val_acc >= converged.score(((feats[val] - mean) / std).numpy(), labels[val].numpy()) - 0.1
    # The run keeps a plain Linear on raw pooled features (standardisation folded in): it predicts
    # what the trial's head predicted. (At most one image may move, between two near-equal scores:
    # on a GPU the trial scored in the device's float32, here on the CPU.)
    head = torch.nn.Linear(channels, 10)
    head.load_state_dict(result.state_dict)
    with torch.no_grad():
        predicted = head(feats[val]).argmax(1)
    confusion = torch.zeros(10, 10, dtype=torch.long).index_put_((labels[val], predicted), torch.ones_like(predicted),
                                                                accumulate=True)
    assert (confusion - torch.tensor(result.confusion)).abs().sum() <= 2  # one image moved: two cells
    with pytest.raises(ValueError, match="needs freeze='all'"):
        TrialConfig(model=spec.key, freeze=3, probe_block="_blocks.5-7").check()
    with pytest.raises(ValueError, match="unknown block 'nope'; choose one of: stem"):
        TrialConfig(model=spec.key, probe_block="nope").check()


def _views_on(device: str) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    acts = [(torch.randn(12, 3, 4, 4, generator=g) + 100 * v).to(device) for v in range(4)]
    return acts, torch.tensor([5, 0, 11, 3, 3, 7]).to(device), torch.tensor([0, 3, 1, 2, 0, 3]).to(device)


def test_a_cached_prefix_serves_each_sample_from_the_view_drawn_for_it():
    from tlcore.finetune.prefix_cache import _gather

    acts, idx, pick = _views_on("cpu")
    batch = _gather(acts, idx, pick)
    for i in range(len(idx)):
        assert torch.equal(batch[i], acts[int(pick[i])][int(idx[i])])
    assert torch.equal(_gather(acts, idx, None), acts[0][idx])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_drawing_views_never_makes_the_cpu_wait_for_the_gpu():
    from tlcore.finetune.prefix_cache import _gather

    acts, idx, pick = _views_on("cuda")
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call raises
    try:
        batch = _gather(acts, idx, pick)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(batch[1].cpu(), acts[3][0].cpu())


def test_a_float32_trial_runs_its_frozen_prefix_with_batchnorms_folded_and_learns_as_without(digits, monkeypatch):
    """Folding is a speed-up only (tlcore.fold): the prefix's activations, hence the whole trial, match."""
    from torch import nn

    from tlcore.finetune import prefix_cache, trial

    spec = zoo.get_spec("efficientnet_lite0")
    cfg = TrialConfig(model=spec.key, freeze=len(zoo.blocks_of(spec)) - 2, epochs=2, precision="float32",
                      augment=("flip",), seed=1)
    prefixes = []
    sampler_init = prefix_cache.ViewSampler.__init__

    def recorded(self, store, prefix, *args):
        prefixes.append(prefix)
        sampler_init(self, store, prefix, *args)

    monkeypatch.setattr(prefix_cache.ViewSampler, "__init__", recorded)
    runs = []
    for fold in (trial.folded, lambda model, keep=(), dtype=None: model):
        monkeypatch.setattr(trial, "folded", fold)
        prefix_cache.RECENT.clear()
        runs.append(run_trial(cfg, digits, device="cpu"))  # a GPU's float32 is TF32: never folded there
    batchnorms = [sum(isinstance(m, nn.BatchNorm2d) for m in p.modules()) for p in prefixes]
    assert batchnorms[0] == 0 < batchnorms[1]  # Lite's same-padding convs stay modules in the split's graph
    folded_run, plain = runs
    # Float32 rounding apart (~1e-6 in the activations), so the same curve; a borderline image may flip.
    for a, b in zip(folded_run.history, plain.history, strict=True):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-3)
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-3)
        assert abs(a.val_acc - b.val_acc) <= 1 / len(digits.val_idx) + 1e-9


def test_a_trial_whose_loss_stops_being_a_number_ends_there_saying_why(digits, monkeypatch):
    """Weights gone to NaN make every later epoch NaN too: the trial stops after the epoch where it
    happened, keeps that epoch, and says what to change (a job records it as 'failed' with that
    reason, see tests/test_jobs.py)."""
    from tlcore.finetune import TrialDiverged, trial

    real = trial.train_one_epoch

    def poisoned(loop, *a, **k):
        with torch.no_grad():
            for p in loop.model.parameters():
                if p.requires_grad:
                    p.fill_(float("nan"))
        return real(loop, *a, **k)

    monkeypatch.setattr(trial, "train_one_epoch", poisoned)
    seen = []
    cfg = TrialConfig(model="efficientnet_lite0", freeze="all", epochs=4, lr=0.5)
    with pytest.raises(TrialDiverged, match=r"diverged in epoch 1: .* rate \(0.5\) is too high"):
        run_trial(cfg, digits, on_epoch=seen.append)
    assert len(seen) == 1 and math.isnan(seen[0].val_loss)



@pytest.mark.parametrize("freeze", ["all", 6])
def test_the_same_seed_starts_the_new_head_alike_whether_the_model_is_passed_in_or_built(digits, freeze, monkeypatch):
    """The app passes its shared model; the CLI builds one, which draws random numbers first. The new
    head's first weights are compared, not the trained ones: a GPU's kernels need not repeat a trial
    to the bit."""
    heads, reset = [], torch.nn.Linear.reset_parameters

    def recorded(self):
        reset(self)
        if not self.weight.is_meta:  # a probe's kept head is allocated on the meta device first, never drawn
            heads.append(self.weight.detach().clone())

    monkeypatch.setattr(torch.nn.Linear, "reset_parameters", recorded)
    cfg = TrialConfig(model="efficientnet_lite0", freeze=freeze, epochs=1, seed=3)
    run_trial(cfg, digits)  # builds the model: its ImageNet classifier, then the new head
    built = heads[-1]
    shared = zoo.load(zoo.get_spec("efficientnet_lite0"))
    heads.clear()
    run_trial(cfg, digits, model=shared)
    assert built.shape == (10, 1280) and torch.equal(heads[-1], built)
