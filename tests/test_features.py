import pytest
import torch

from tlcore import data, features, zoo
from tlcore.device import autocast, mixed_dtype, pick_device


@pytest.fixture(scope="module")
def tiny():
    return data.load("faces", size=32, max_per_class=3)


def test_images_too_small_for_a_network_are_read_at_the_smallest_size_it_works_at():
    lite0 = zoo.get_spec("efficientnet_lite0")
    # Its padding is fixed for 224 px: up to 63 px its last convolution gives one position, from 64 two by two.
    assert zoo.smallest_input(lite0) == 64
    small, large = data.load("textures", size=32, max_per_class=10), data.load("textures", size=96, max_per_class=3)
    assert features.input_size(lite0, small) == 64 and features.input_size(lite0, large) == 96
    # Read at 32 px, its ImageNet head answered at chance: a mean top probability of 0.002 (chance: 0.001).
    logits = features.extract(lite0, small, block=features.LOGITS)
    assert logits.softmax(dim=1).max(dim=1).values.mean() > 0.2


def test_at_its_crop_size_or_above_a_network_reads_images_as_they_are_without_searching(monkeypatch):
    def searched(spec):
        raise AssertionError("the smallest-input search ran")  # 2.5 s of a first 224 px trial's setup

    monkeypatch.setattr(zoo, "smallest_input", searched)
    for key in ("efficientnet_lite0", "resnet18", "inception_v3"):
        spec = zoo.get_spec(key)
        assert features.read_size(spec, spec.crop_size) == spec.crop_size
        assert features.read_size(spec, spec.crop_size + 32) == spec.crop_size + 32
    with pytest.raises(AssertionError, match="search ran"):  # below it, the search decides
        features.read_size(zoo.get_spec("resnet18"), 64)


def test_penultimate_features_are_the_classifier_input(tiny):
    spec = zoo.get_spec("efficientnet_lite0")
    feats = features.extract(spec, tiny)
    assert feats.shape == (6, 1280) and feats.dtype == torch.float32
    # features.extract runs where the app runs: fp32 on most CPUs, bf16 on a GPU or an AMX CPU. The
    # reference runs there too, in the same precision, so like is compared with like.
    dev = pick_device(None)
    model = zoo.load(spec, device=dev)
    with torch.inference_mode(), autocast(dev):
        x = features.normalise(tiny.images.to(dev), spec, features.input_size(spec, tiny))
        expected = model._avg_pooling(model.extract_features(x)).flatten(1).float().cpu()
        logits = model(x).float().cpu()
        refit = model._fc(feats.to(dev)).float().cpu()
    # bf16 rounds each product's result to 8 bits of mantissa (~0.4 %); the head's 1,280-term sums
    # see a few of those.
    rtol, atol = (1e-5, 1e-4) if mixed_dtype(dev) is None else (2e-2, 2e-2)
    torch.testing.assert_close(feats, expected, rtol=rtol, atol=atol)
    torch.testing.assert_close(refit, logits, rtol=rtol, atol=10 * atol)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_features_are_cached_in_memory_and_on_disk(tiny, monkeypatch):
    spec = zoo.get_spec("efficientnet_lite0")
    first = features.extract(spec, tiny, block="stem")
    features._MEMORY.clear()

    def no_compute(*a, **k):
        raise AssertionError("recomputed instead of read from disk")

    monkeypatch.setattr(features, "_compute", no_compute)
    assert torch.equal(features.extract(spec, tiny, block="stem"), first)


@pytest.mark.parametrize(("model", "block", "dim"), [
    ("resnet18", "layer2", 128), ("resnet18", "penultimate", 512),
    ("swin_t", "features.3", 192), ("vit_b_16", "encoder.layers.encoder_layer_0", 768),
])
def test_any_block_of_other_families(tiny, model, block, dim):
    spec = zoo.get_spec(model)
    net = zoo.load(spec, pretrained=False)  # random weights: shapes and plumbing only
    feats = features.extract(spec, tiny, block=block, model=net, batch_size=4)
    assert feats.shape == (6, dim) and torch.isfinite(feats).all()


def test_unknown_block_lists_the_choices(tiny):
    spec = zoo.get_spec("efficientnet_lite0")
    with pytest.raises(ValueError, match="choose one of: stem"):
        features.extract(spec, tiny, block="layer9")


def test_embed_2d_map():
    feats = torch.randn(40, 16)
    xy = features.embed_2d(feats, seed=0)
    assert xy.shape == (40, 2)
    with pytest.raises(ValueError):
        features.embed_2d(torch.randn(3, 4))


def test_a_block_ending_in_an_auxiliary_classifier_is_read_where_evaluation_runs():
    # Inception's mixed6 ends with AuxLogits, which only runs in training.
    spec = zoo.get_spec("inception_v3")
    faces = data.load("faces", size=80, max_per_class=2)
    feats = features.extract(spec, faces, block="mixed6", model=zoo.load(spec, pretrained=False), batch_size=4)
    assert feats.shape == (4, 768)


def test_batchnorm_statistics_equal_a_float64_pass_over_the_same_images(tiny, monkeypatch):
    """The per-batch moments merged across batches are the statistics of all the images at once
    (checked with batches of 4 over 6 images: one full batch and one short)."""
    spec = zoo.get_spec("efficientnet_lite0")
    model = zoo.load(spec)
    monkeypatch.setattr(features, "inference_batch", lambda device, size: 4)
    stats = features.batchnorm_statistics(spec, tiny, model=model, max_images=6)
    seen = {}
    bns = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    hooks = [m.register_forward_pre_hook(lambda m, args, name=name: seen.update({name: args[0].double()}))
             for name, m in bns.items()]
    with torch.inference_mode():
        model.eval()(features.normalise(tiny.images, spec, features.input_size(spec, tiny)))
    for h in hooks:
        h.remove()
    assert [s["name"] for s in stats] == list(seen)  # forward order, every BatchNorm layer
    for s in stats:
        x = seen[s["name"]]
        torch.testing.assert_close(s["mean"], x.mean(dim=(0, 2, 3)), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s["var"], x.var(dim=(0, 2, 3), correction=0), rtol=1e-4, atol=1e-5)
        assert s["mean"].dtype == torch.float64


def test_batch_moments_of_half_precision_activations_do_not_overflow():
    x = (torch.randn(64, 8, 32, 32) * 30).half()  # Σ(x − mean)² per channel ≈ 6e7 > float16's 65,504
    n, mean, m2 = features._moments(x)
    exact = x.double()
    torch.testing.assert_close(m2 / n, exact.var(dim=(0, 2, 3), correction=0), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(mean, exact.mean(dim=(0, 2, 3)), rtol=1e-3, atol=1e-3)


def _images_seen(model):
    """A counter of the images the model runs on (a forward pre-hook; remove it with .remove())."""
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    return seen, handle


def test_features_of_some_rows_then_all_run_each_image_once(tiny, monkeypatch):
    monkeypatch.setenv("TLCORE_CPU_BF16", "0")  # float32 on any CPU: the tolerance below is float32's
    spec = zoo.get_spec("efficientnet_lite0")
    model = zoo.load(spec)
    # Counting from before the reference pass: the folded copy it makes carries the counter (a
    # copy made for a hook registered later would run a probe image through both models).
    seen, handle = _images_seen(model)
    try:
        whole = features.extract_many(spec, tiny, ["stem", features.PENULTIMATE], model=model,
                                      view="rows-reference")  # a pass of its own, never served from the cache
        monkeypatch.setattr(features, "_MEMORY", type(features._MEMORY)())
        view = "rows-test"  # a cache entry of its own
        seen.clear()
        rows = torch.tensor([4, 0, 2])
        some = features.extract_many(spec, tiny, ["stem", features.PENULTIMATE], model=model, view=view, rows=rows)
        assert sum(seen) == 3
        kept = some[features.PENULTIMATE].clone()
        features._MEMORY.clear()  # the next call reads the entry from disk
        every = features.extract_many(spec, tiny, ["stem", features.PENULTIMATE], model=model, view=view)
        assert sum(seen) == len(tiny)  # only the three missing images ran
        again = features.extract(spec, tiny, block="stem", model=model, view=view)
        assert sum(seen) == len(tiny)
    finally:
        handle.remove()
    tol = {"rtol": 1e-5, "atol": 1e-4}  # one CPU model, float32 throughout (the cache keeps precisions apart)
    for block in ("stem", features.PENULTIMATE):
        torch.testing.assert_close(every[block], whole[block], **tol)
        torch.testing.assert_close(some[block], whole[block][rows], **tol)
    assert torch.equal(again, every["stem"])
    assert torch.equal(some[features.PENULTIMATE], kept)  # filling the rest changed nothing handed out


def test_a_cache_entry_from_before_rows_were_tracked_is_read_whole(tiny, monkeypatch):
    monkeypatch.setenv("TLCORE_CPU_BF16", "0")  # float32's key, as such entries were written, on any CPU
    spec = zoo.get_spec("efficientnet_lite0")
    view = "old-format-test"
    size = features.input_size(spec, tiny)
    key = features._key(spec, tiny, "stem", size, view)
    old = torch.arange(len(tiny) * 3, dtype=torch.float32).view(len(tiny), 3)
    torch.save(old, features.paths.folder("features") / f"{key}.pt")
    features._MEMORY.pop(key, None)
    monkeypatch.setattr(features, "_compute", lambda *a, **k: pytest.fail("recomputed a whole entry"))
    assert torch.equal(features.extract(spec, tiny, block="stem", view=view, device="cpu"), old)  # float32's key


def test_features_are_cached_per_precision(tiny, monkeypatch):
    """A GPU (or a CPU with AMX) computes features in bf16: they must not be handed to a float32
    caller (a CPU without AMX sharing the cache folder) from the cache, nor fill part of its entry."""
    spec = zoo.get_spec("efficientnet_lite0")
    model = zoo.load(spec)
    view = "precision-test"
    monkeypatch.setenv("TLCORE_CPU_BF16", "0")
    features.extract(spec, tiny, model=model, view=view)
    seen, handle = _images_seen(model)
    try:
        monkeypatch.setenv("TLCORE_CPU_BF16", "1")
        features.extract(spec, tiny, model=model, view=view)
        assert sum(seen) == len(tiny)  # the float32 entry was not served
        monkeypatch.setenv("TLCORE_CPU_BF16", "0")
        features.extract(spec, tiny, model=model, view=view)
        assert sum(seen) == len(tiny)  # and it is still there
    finally:
        handle.remove()


def test_two_calls_filling_one_entry_at_once_keep_each_others_rows(tiny, monkeypatch):
    """The Strategy page computes the training rows while the lab's probe computes the others:
    both read the entry empty, and the one that stores last must not drop the other's rows."""
    import threading
    import time

    spec = zoo.get_spec("efficientnet_lite0")
    model = zoo.load(spec)
    view = "concurrent-rows-test"
    compute = features._compute
    both_read = threading.Barrier(2)

    def slow(*args):
        both_read.wait(timeout=30)  # each call has read the entry before either stores
        out = compute(*args)
        time.sleep(0.05)
        return out

    monkeypatch.setattr(features, "_compute", slow)
    halves = (torch.arange(0, len(tiny), 2), torch.arange(1, len(tiny), 2))
    calls = [threading.Thread(target=features.extract_many,
                              args=(spec, tiny, [features.PENULTIMATE]),
                              kwargs={"model": model, "view": view, "rows": rows}) for rows in halves]
    for call in calls:
        call.start()
    for call in calls:
        call.join()
    monkeypatch.setattr(features, "_compute", lambda *a, **k: pytest.fail("rows were lost"))
    features._MEMORY.clear()  # from disk, as the next process would read it
    whole = features.extract(spec, tiny, model=model, view=view)
    assert whole.shape[0] == len(tiny) and whole.abs().sum(dim=1).gt(0).all()


def test_standardising_after_an_inference_pass_still_lets_gradients_through():
    """The per-device mean and std are made once; made inside inference mode they would refuse
    the gradients of a later render."""
    spec = zoo.get_spec("efficientnet_lite0")
    features._channel_stats.cache_clear()
    with torch.inference_mode():
        features.standardise(torch.rand(1, 3, 8, 8), spec)
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    features.standardise(x, spec).sum().backward()
    assert x.grad is not None and torch.allclose(x.grad, torch.full_like(x, 1 / spec.std[0]))


def _tight_pool(monkeypatch, fits: int) -> list[int]:
    """Batches larger than ``fits`` run out of memory (the CUDA error, raised on the CPU)."""
    refused, original = [], features.pool

    def pool(x, family):
        if x.shape[0] > fits:
            refused.append(x.shape[0])
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return original(x, family)

    monkeypatch.setattr(features, "pool", pool)
    return refused


def test_a_feature_pass_halves_its_batch_on_out_of_memory_and_gives_the_same_features(tiny, monkeypatch):
    spec = zoo.get_spec("efficientnet_lite0")
    model, rows = zoo.load(spec).eval(), torch.arange(len(tiny))
    blocks = [features.PENULTIMATE, "stem"]
    whole = features._compute(model, spec, tiny, blocks, tiny.size, torch.device("cpu"), 8, rows, False)
    refused = _tight_pool(monkeypatch, fits=2)
    halved = features._compute(model, spec, tiny, blocks, tiny.size, torch.device("cpu"), 8, rows, False)
    assert refused == [6, 4]  # batches of 8 (all 6 images), then 4, then on at 2
    for b in blocks:
        torch.testing.assert_close(halved[b], whole[b], rtol=1e-5, atol=1e-5)


def test_a_feature_pass_that_cannot_fit_one_image_says_so(tiny, monkeypatch):
    from tlcore.device import TooLargeForDevice

    spec = zoo.get_spec("efficientnet_lite0")
    _tight_pool(monkeypatch, fits=0)
    with pytest.raises(TooLargeForDevice, match="out of memory even for one image in efficientnet_lite0 at 32 px"):
        features._compute(zoo.load(spec).eval(), spec, tiny, [features.PENULTIMATE], tiny.size,
                          torch.device("cpu"), 8, torch.arange(len(tiny)), False)


def test_batchnorm_statistics_halve_their_batch_on_out_of_memory_and_count_each_image_once(tiny, monkeypatch):
    """A batch that runs out of memory half way has been merged into the layers it reached: those
    are rolled back before the batch runs again in halves."""
    spec = zoo.get_spec("efficientnet_lite0")
    model = zoo.load(spec).eval()
    monkeypatch.setattr(features, "inference_batch", lambda dev, size: 8)
    whole = features.batchnorm_statistics(spec, tiny, model=model)
    features._MEMORY.clear()
    refused, original = [], features._moments

    def tight(x):
        if x.shape[0] > 2 and x.shape[1] > 100:  # deep layers only: the early ones had merged it
            refused.append(x.shape[0])
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return original(x)

    monkeypatch.setattr(features, "_moments", tight)
    halved = features.batchnorm_statistics(spec, tiny, model=model)
    assert refused == [6, 4]
    assert [h["name"] for h in halved] == [w["name"] for w in whole]
    for h, w in zip(halved, whole, strict=True):
        torch.testing.assert_close(h["mean"], w["mean"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(h["var"], w["var"], rtol=1e-4, atol=1e-6)


def test_a_pass_reports_its_progress_and_a_cached_one_reports_nothing(tiny):
    spec = zoo.get_spec("efficientnet_lite0")
    seen = []
    features.extract(spec, tiny, block="_blocks.3", batch_size=4, on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(4, 6), (6, 6)]  # after each batch, the last one short
    seen.clear()
    features.extract(spec, tiny, block="_blocks.3", on_step=lambda done, total: seen.append((done, total)))
    assert seen == []


def test_a_pass_stopped_from_its_progress_callback_caches_nothing(tiny):
    """What a Streamlit rerun does to a page's pass: an exception out of ``on_step``."""
    spec = zoo.get_spec("efficientnet_lite0")

    class Rerun(Exception):
        pass

    def stop_after_first_batch(done, total):
        raise Rerun

    model = zoo.load(spec)
    with pytest.raises(Rerun):
        features.extract(spec, tiny, block="_blocks.5", model=model, batch_size=4, on_step=stop_after_first_batch)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    seen = []
    again = features.extract(spec, tiny, block="_blocks.5", model=model, batch_size=4,
                             on_step=lambda done, total: seen.append(done))
    assert seen == [4, 6]  # the whole pass again: no half-filled entry was kept
    features._MEMORY.clear()
    assert torch.equal(features.extract(spec, tiny, block="_blocks.5", model=model), again)


def test_batchnorm_statistics_report_progress_over_the_images_they_use(tiny):
    spec = zoo.get_spec("efficientnet_lite0")
    seen = []
    features.batchnorm_statistics(spec, tiny, max_images=5, on_step=lambda done, total: seen.append((done, total)))
    assert features.batchnorm_images(tiny, 5) == 5 and seen[-1] == (5, 5)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_images_already_cached_count_as_done_in_the_progress(tiny):
    spec = zoo.get_spec("efficientnet_lite0")
    features.extract_many(spec, tiny, ["_blocks.4"], rows=torch.tensor([0, 1]))
    seen = []
    features.extract(spec, tiny, block="_blocks.4", batch_size=2, on_step=lambda done, total: seen.append((done, total)))
    assert seen == [(4, 6), (6, 6)]  # the user sees how much of the whole is there, not of what was left
