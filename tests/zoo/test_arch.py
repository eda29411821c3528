"""The architecture table (the papers' per-layer tables): its sums are torchvision's own metadata."""

import pytest

from tlcore import zoo
from tlcore.zoo.arch import architecture


@pytest.mark.parametrize("key", ["vgg16.IMAGENET1K_V1", "resnet18.IMAGENET1K_V1", "googlenet.IMAGENET1K_V1",
                                 "mobilenet_v2.IMAGENET1K_V1", "efficientnet_lite0.IMAGENET1K_TF"])
def test_the_layers_multiply_adds_add_up_to_the_weights_gflops(key):
    spec = zoo.get_spec(key)
    rows = architecture(spec)
    assert sum(r.macs for r in rows) / 1e9 == pytest.approx(spec.gflops, rel=2e-3)
    # Parameters outside convolutions and linear layers are BatchNorm's: at most 1.5 % here.
    assert sum(r.params for r in rows) == pytest.approx(spec.params, rel=0.015)


def test_vgg16_is_configuration_d_and_googlenet_has_its_table_1():
    vgg = architecture(zoo.get_spec("vgg16.IMAGENET1K_V1"))
    convs = [r for r in vgg if r.kind.startswith("conv")]
    assert len(convs) == 13 and all(r.kind == "conv 3×3/1" for r in convs)
    assert [r.out_channels for r in convs] == [64] * 2 + [128] * 2 + [256] * 3 + [512] * 6
    assert sum(r.kind.startswith("max pool 2×2/2") for r in vgg) == 5
    assert [r.out_channels for r in vgg if r.kind == "linear"] == [4096, 4096, 1000]
    inception3a = {r.name.split(".", 1)[1]: r for r in architecture(zoo.get_spec("googlenet.IMAGENET1K_V1"))
                   if r.name.startswith("inception3a.")}
    # #1×1, #3×3 reduce → #3×3, #5×5 reduce → its conv (torchvision's is 3×3), pool proj; 28×28
    assert inception3a["branch1.conv"].out_channels == 64 and inception3a["branch4.1.conv"].out_channels == 32
    assert (inception3a["branch2.0.conv"].out_channels, inception3a["branch2.1.conv"].out_channels) == (96, 128)
    assert (inception3a["branch3.0.conv"].out_channels, inception3a["branch3.1.conv"].out_channels) == (16, 32)
    assert {r.out_size for r in inception3a.values()} == {"28×28"}


def test_depthwise_and_strided_layers_say_so():
    kinds = {r.kind for r in architecture(zoo.get_spec("mobilenet_v2.IMAGENET1K_V1"))}
    assert "conv 3×3/2 depthwise" in kinds and "conv 1×1/1" in kinds and "linear" in kinds
