"""The first layer's filters: what is drawn is what the first convolution and its BatchNorm compute
on the photo's own pixels."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tlcore import zoo
from tlcore.vis import filters


@pytest.fixture(scope="module")
def lite0():
    spec = zoo.get_spec("efficientnet_lite0")
    return spec, zoo.load(spec)


def test_a_filter_is_the_first_layers_response_to_the_photos_pixels(lite0):
    spec, model = lite0
    layer = filters.first_layer(spec, model)
    assert (layer.path, layer.kind, layer.batchnorm) == ("_conv_stem", "conv 3×3/2", "_bn0")
    assert layer.weights.shape == (32, 3, 3, 3)  # N × k × k × RGB
    conv, bn = model.get_submodule(layer.path), model.get_submodule(layer.batchnorm)
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 1, 3, 3, 3, generator=g)  # two 3×3 RGB patches in 0–1

    def response(photo):  # normalise as the model does, then the convolution and BatchNorm at one place
        x = (photo - torch.tensor(spec.mean)[:, None, None]) / torch.tensor(spec.std)[:, None, None]
        with torch.no_grad():
            return bn(F.conv2d(x, conv.weight)).flatten()

    # The BatchNorm's offset and the normalisation's mean cancel in a difference of two patches.
    drawn = torch.from_numpy(layer.weights).permute(0, 3, 1, 2)
    expected = (drawn * (a - b)).sum(dim=(1, 2, 3))
    torch.testing.assert_close(response(a) - response(b), expected, rtol=1e-4, atol=1e-4)


def test_grey_is_zero_and_negligible_filters_stay_grey(lite0):
    layer = filters.first_layer(*lite0)
    weak = layer.negligible()
    assert 0 < weak.sum() < len(weak)  # Lite0 has a few filters that weight decay drove to ~0
    for scale in ("each", "shared"):
        images = layer.images(scale)
        assert images.dtype == np.uint8 and images.shape == layer.weights.shape
        assert np.isin(images[weak], [127, 128]).all()
        assert np.array_equal(images[layer.weights == 0], np.full((layer.weights == 0).sum(), 128, np.uint8))
    each, shared = layer.images("each"), layer.images("shared")
    strong = ~weak
    # Each live filter reaches full contrast on its own range; on the shared one only the strongest does.
    peaks = np.abs(each[strong].astype(int) - 127.5).max(axis=(1, 2, 3))
    assert (peaks >= 127).all()
    shared_peaks = np.abs(shared[strong].astype(int) - 127.5).max(axis=(1, 2, 3))
    assert shared_peaks.max() >= 127 and shared_peaks.min() < 64
    with pytest.raises(ValueError, match="scale must be 'each' or 'shared'"):
        layer.images("loud")
    # A filter just under the line (9e-4 of the layer's largest weight) is drawn grey too, not stretched.
    kernels = layer.kernels.copy()
    kernels[0] = kernels[0] / np.abs(layer.weights[0]).max() * 9e-4 * np.abs(layer.weights).max() / layer.gain[0]
    faint = filters.FirstLayer(layer.path, layer.kind, kernels, layer.gain, layer.batchnorm)
    assert faint.negligible()[0] and np.abs(faint.images("each")[0].astype(int) - 127.5).max() <= 1


@pytest.mark.parametrize("name, path, batchnorm", [("resnet18", "conv1", "bn1"), ("alexnet", "features.0", None),
                                                   ("googlenet", "conv1.conv", "conv1.bn")])
def test_the_first_convolution_in_forward_order_of_other_families(name, path, batchnorm):
    spec = zoo.get_spec(name)
    model = zoo.load(spec, pretrained=False)  # the architecture is enough: no download
    layer = filters.first_layer(spec, model)
    assert (layer.path, layer.batchnorm) == (path, batchnorm)
    assert layer.weights.shape[1:] == (*model.get_submodule(path).kernel_size, 3)


def test_a_model_without_a_first_convolution_is_a_clear_error(lite0, monkeypatch):
    spec, model = lite0
    monkeypatch.setattr(filters, "architecture", lambda spec: [])
    with pytest.raises(ValueError, match="first layer is not a convolution over the RGB image"):
        filters.first_layer(spec, model)


def test_a_change_of_weights_is_told_apart_from_a_change_of_batchnorm_statistics(lite0):
    import copy

    spec, model = lite0
    before = filters.first_layer(spec, model)
    tuned = copy.deepcopy(model)
    with torch.no_grad():
        conv, bn = tuned.get_submodule(before.path), tuned.get_submodule(before.batchnorm)
        conv.weight.mul_(1.01)  # every filter 1 % larger: a learned change
        bn.running_var.add_(bn.eps).mul_(4).sub_(bn.eps)  # statistics of other data: σ doubles, the scale halves
    moved = filters.change(before, filters.first_layer(spec, tuned))
    live = ~before.negligible()
    np.testing.assert_allclose(moved.weights[live], 0.01, rtol=1e-3)
    np.testing.assert_allclose(moved.gain[live], 0.5, rtol=1e-4)
    assert np.isnan(moved.weights[~live]).all() and np.isnan(moved.gain[~live]).all()
    unchanged = filters.change(before, filters.first_layer(spec, model))
    assert np.nanmax(unchanged.weights) == 0 and np.nanmax(np.abs(unchanged.gain - 1)) == 0
