"""Feature visualisation: it optimises, it is reproducible, it leaves the shared model alone."""

import threading

import numpy as np
import pytest
import torch

from tlcore import features, zoo
from tlcore.hooks import Capture, Target
from tlcore.vis import render as R
from tlcore.vis.examples import LayerStats, class_directions, layer_stats
from tlcore.zoo.layers import NO_CHANNEL_MAPS

LAYER = "_blocks.8"


def cfg(**kw):
    return R.RenderConfig(**{"layer": LAYER, "steps": 6, "size": 40, **kw})


def test_activation_grows_over_the_steps(lite):
    spec, model = lite
    channels = [0, 5, 11]
    start = R.render(spec, model, cfg(steps=1), channels, use_cache=False)
    later = R.render(spec, model, cfg(steps=16), channels, use_cache=False)
    for a, b in zip(start, later, strict=True):
        assert b.activation > a.activation + 1.0, (a.activation, b.activation)


def test_a_seed_reproduces_a_render_and_another_seed_does_not(lite):
    spec, model = lite
    a = R.render(spec, model, cfg(seed=3), [2], use_cache=False)[0]
    b = R.render(spec, model, cfg(seed=3), [2], use_cache=False)[0]
    c = R.render(spec, model, cfg(seed=4), [2], use_cache=False)[0]
    assert np.array_equal(a.image, b.image) and a.activation == b.activation
    assert np.abs(a.image.astype(int) - c.image.astype(int)).mean() > 5


def test_a_channel_renders_the_same_alone_or_in_a_batch(lite):
    # What makes the per-channel cache key honest: batch neighbours do not change a render.
    spec, model = lite
    alone = R.render(spec, model, cfg(), [7], use_cache=False)[0]
    batched = R.render(spec, model, cfg(), [1, 7, 30], use_cache=False)[1]
    diff = np.abs(alone.image.astype(int) - batched.image.astype(int))
    assert diff.mean() < 0.5 and diff.max() <= 4
    assert batched.activation == pytest.approx(alone.activation, rel=1e-3)


def test_the_shared_model_is_only_read_and_keeps_no_hooks(lite, no_hooks):
    spec, model = lite
    before = {k: v.clone() for k, v in model.state_dict().items()}
    R.render(spec, model, cfg(objective="neuron"), [0, 1], use_cache=False)
    R.render_diverse(spec, model, cfg(), 4, n=2, use_cache=False)
    assert no_hooks(model)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_no_hook_survives_a_cancel_or_an_error(lite, no_hooks):
    spec, model = lite
    calls = []

    def stop_at_third():
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(R.RenderCancelled):
        R.render(spec, model, cfg(steps=10), [0], should_stop=stop_at_third, use_cache=False)
    assert no_hooks(model)

    def broken(step, total):
        raise RuntimeError("progress display failed")

    with pytest.raises(RuntimeError, match="progress display failed"):
        R.render(spec, model, cfg(), [0], on_step=broken, use_cache=False)
    assert no_hooks(model)


@pytest.mark.parametrize("key", ["efficientnet_lite0", "resnet18"])
def test_each_model_sees_its_own_normalisation(monkeypatch, key):
    spec = zoo.get_spec(key)
    model = zoo.load(spec, pretrained=zoo.weights_available(spec))
    layer = zoo.layers(spec)[5].name
    images, inputs = [], []
    original = R.fft_image

    def recording_fft(*a, **kw):
        spectrum, image = original(*a, **kw)

        def recorded():
            made = image()
            images.append(made.detach())
            return made  # still attached: the render differentiates it
        return spectrum, recorded

    monkeypatch.setattr(R, "fft_image", recording_fft)
    monkeypatch.setattr(R.Robustness, "__call__", lambda self, x, step: x)  # the image as it is
    handle = model.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach()))
    try:
        R.render(spec, model, R.RenderConfig(layer=layer, steps=2, size=32), [0], use_cache=False)
    finally:
        handle.remove()
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    assert len(images) == 3  # two steps and the final measurement (a channel count may probe first)
    for img, x in zip(images, inputs[-3:], strict=True):
        assert torch.allclose(x, (img - mean) / std, atol=1e-6)


def test_renders_are_cached_per_channel_on_disk(lite, monkeypatch):
    spec, model = lite
    first = R.render(spec, model, cfg(seed=11), [0, 1])
    assert not any(r.cached for r in first)

    def no_optimising(*a, **k):
        raise AssertionError("optimised again instead of reading the cache")

    monkeypatch.setattr(R, "_optimise", no_optimising)
    again = R.render(spec, model, cfg(seed=11), [1, 0])
    assert [r.target for r in again] == [1, 0] and all(r.cached for r in again)
    assert np.array_equal(again[1].image, first[0].image) and again[1].activation == first[0].activation
    with pytest.raises(AssertionError):
        R.render(spec, model, cfg(seed=11, steps=7), [0])  # another setting is another render


@pytest.mark.parametrize(("change", "message"), [
    ({"layer": "_blocks.88"}, "did you mean _blocks.8"),
    ({"steps": 0}, "steps must be"),
    ({"size": 8}, "size must be"),
    ({"objective": "vibes"}, "choose one of: channel"),
])
def test_bad_settings_name_what_is_allowed(lite, change, message):
    spec, model = lite
    with pytest.raises(ValueError, match=message):
        R.render(spec, model, cfg(**change), [0])


def test_channels_out_of_range_are_refused(lite):
    spec, model = lite
    with pytest.raises(ValueError, match=r"channels 0…111"):
        R.render(spec, model, cfg(), [112])


def test_activation_ratio_is_measured_from_the_median():
    # Linear (EfficientNet-style) outputs: negative on every image, yet the figure keeps its meaning.
    stats = LayerStats("x", torch.tensor([[-3.0, 2.0], [-2.0, 2.0], [-1.0, 2.0]]))
    assert stats.ratio(0, -1.0) == pytest.approx(1.0)  # as strong as the best image
    assert stats.ratio(0, -2.0) == pytest.approx(0.0)  # as an ordinary one
    assert stats.ratio(0, 3.0) == pytest.approx(5.0)
    assert stats.ratio(1, 9.0) is None  # constant over the data: no scale to measure with
    assert stats.ratio(0, None) is None
    assert stats.top(0, 2) == [2, 1]


def test_renders_excite_their_channel_beyond_the_dataset(lite, textures):
    spec, model = lite
    stats = layer_stats(spec, textures, LAYER, model=model)
    renders = R.render(spec, model, cfg(steps=24, size=64), [0, 1, 2, 3], use_cache=False)
    ratios = [stats.ratio(r.target, r.activation) for r in renders]
    assert all(r is not None and r > 1.5 for r in ratios), ratios


def test_dataset_examples_come_from_one_pass_shared_with_features(lite, textures):
    spec, model = lite
    stats = layer_stats(spec, textures, LAYER, model=model)
    assert stats.acts.shape == (len(textures), 112)
    assert torch.equal(stats.acts, features.extract(spec, textures, block=LAYER, model=model))
    best = stats.top(5, 3)
    column = stats.acts[:, 5]
    assert column[best[0]] == column.max() and column[best[0]] >= column[best[1]] >= column[best[2]]


def test_hooks_only_read_their_own_thread(lite, no_hooks):
    # Another session running the shared model meanwhile is neither stopped nor read.
    spec, model = lite
    x = torch.zeros(2, 3, 32, 32)
    out = []
    with Capture(model, [Target(LAYER, model.get_submodule(LAYER))]) as capture:
        worker = threading.Thread(target=lambda: out.append(model(x)))
        worker.start()
        worker.join()
        mine = capture(x)
    assert out[0].shape == (2, 1000) and mine[LAYER].shape[:2] == (2, 112)
    assert no_hooks(model)


def test_layer_lists_are_module_paths_with_channel_maps():
    for model in sorted({s.model for s in zoo.list_models()}):
        spec = zoo.get_spec(model)
        layers = zoo.layers(spec)
        if spec.family in NO_CHANNEL_MAPS:
            assert layers == ()
            continue
        assert layers, model  # names come from the module tree by construction; shapes from a meta pass
        assert all(layer.channels > 0 and layer.size > 1 for layer in layers), model
        blocks = [b.name for b in zoo.blocks_of(spec)]
        assert [blocks.index(layer.block) for layer in layers] == sorted(blocks.index(layer.block) for layer in layers)


def test_class_directions_render_what_the_layer_associates_with_each_class(lite, textures):
    spec, model = lite
    stats = layer_stats(spec, textures, LAYER, model=model)
    directions = class_directions(stats, textures.labels, [0, 2])
    assert directions.shape == (2, 112)
    assert torch.allclose(directions[0], stats.acts[textures.labels == 0].mean(0) - stats.acts.mean(0))
    first = R.render(spec, model, cfg(objective="direction", steps=12), [0, 2], directions=directions)
    assert all(r.activation is None for r in first)  # no single channel to measure a ratio for
    assert stats.top_along(directions[0], 3)
    swapped = R.render(spec, model, cfg(objective="direction", steps=12), [0, 2], directions=directions.flip(0),
                       only_cached=True)
    assert swapped is None  # another direction is another render, not a cache hit
    with pytest.raises(ValueError, match="one direction"):
        R.render(spec, model, cfg(objective="direction"), [0, 1, 2], directions=directions)


def test_a_size_too_small_for_a_deep_layer_is_a_message():
    spec = zoo.get_spec("alexnet")
    model = zoo.load(spec, pretrained=False)
    with pytest.raises(ValueError, match="too small for the network"):
        R.render(spec, model, R.RenderConfig(layer="features.12", steps=2, size=16), [0], use_cache=False)


def test_the_image_is_made_in_float32_and_only_the_model_runs_in_mixed_precision(lite, monkeypatch):
    """On a GPU renders run under bf16 autocast; the parameterisation (an FFT and a colour product)
    must stay float32 there, or the pixels come from a bf16 tensor. Simulated with CPU autocast."""
    spec, model = lite
    made, original = [], R.fft_image

    def recording(*args, **kw):
        spectrum, image = original(*args, **kw)

        def checked():
            out = image()
            made.append((torch.is_autocast_enabled("cpu"), out.dtype))
            return out

        return spectrum, checked

    monkeypatch.setattr(R, "fft_image", recording)
    monkeypatch.setattr(R, "model_precision", lambda dev: torch.autocast("cpu", dtype=torch.bfloat16))
    R.render(spec, model, cfg(steps=2), [0], use_cache=False)
    assert made == [(False, torch.float32)] * 3  # two steps and the final image


def test_renders_keep_float32_on_a_cpu_even_where_trials_mix(monkeypatch):
    monkeypatch.setenv("TLCORE_CPU_BF16", "1")
    from tlcore.device import mixed_dtype

    assert mixed_dtype(torch.device("cpu")) is torch.bfloat16
    with R.model_precision(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
