"""The architecture table (the papers' per-layer tables): its sums are torchvision's own metadata."""

import pytest

from tlcore import zoo
from tlcore.zoo.arch import architecture, modules


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


def test_googlenet_by_module_is_its_table_1():
    rows = modules(zoo.get_spec("googlenet.IMAGENET1K_V1"))
    assert [r.name for r in rows] == [
        "conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
        "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
        "inception5a", "inception5b", "avgpool", "fc"]  # the auxiliary classifiers do not run in evaluation
    inception = [r for r in rows if r.kind == "Inception"]
    assert {r.depth for r in inception} == {2} and rows[0].depth == 1 and rows[1].depth == 0
    # Table 1's output sizes: 28×28×256, 28×28×480, 14×14×512 … 7×7×1024
    assert [(r.out_size, r.out_channels) for r in inception] == [
        ("28×28", 256), ("28×28", 480), ("14×14", 512), ("14×14", 512), ("14×14", 512), ("14×14", 528),
        ("14×14", 832), ("7×7", 832), ("7×7", 1024)]
    assert inception[0].layers == ("branch1: 1×1 64 · branch2: 1×1 96 → 3×3 128 · branch3: 1×1 16 → 3×3 32 · "
                                   "branch4: max pool 3×3 → 1×1 32")
    # Table 1's 128M ops for inception (3a), less its 5×5 branch that torchvision makes 3×3 (28×28 × 16→32)
    assert inception[0].macs + 28 * 28 * 16 * 32 * (25 - 9) == pytest.approx(128e6, rel=0.005)


@pytest.mark.parametrize("key", ["resnet18.IMAGENET1K_V1", "googlenet.IMAGENET1K_V1", "mobilenet_v2.IMAGENET1K_V1",
                                 "efficientnet_lite0.IMAGENET1K_TF", "vit_b_16.IMAGENET1K_V1"])
def test_modules_hold_every_layer_once_and_stay_within_one_block(key):
    spec = zoo.get_spec(key)
    rows = modules(spec)
    assert sum(r.macs for r in rows) == sum(r.macs for r in architecture(spec))
    members = [(m, b.name) for b in zoo.blocks_of(spec) for m in b.members]
    for r in rows:  # a row never spans two of the freezable blocks
        assert len({b for m, b in members if r.name == m or r.name.startswith(m + ".") or m.startswith(r.name + ".")}) <= 1, r.name


def test_a_residual_block_lists_its_shortcut_and_tokens_say_so():
    layer2 = next(r for r in modules(zoo.get_spec("resnet18.IMAGENET1K_V1")) if r.name == "layer2.0")
    assert (layer2.kind, layer2.depth, layer2.out_size, layer2.out_channels) == ("BasicBlock", 2, "28×28", 128)
    assert layer2.layers == "conv1: 3×3/2 128 · conv2: 3×3 128 · downsample: 1×1/2 128"
    vit = [r for r in modules(zoo.get_spec("vit_b_16.IMAGENET1K_V1")) if r.kind == "EncoderBlock"]
    assert len(vit) == 12 and {(r.out_size, r.out_channels) for r in vit} == {("197 tokens", 768)}
    swin = [r for r in modules(zoo.get_spec("swin_t.IMAGENET1K_V1")) if r.kind == "SwinTransformerBlock"]
    assert (swin[0].out_size, swin[0].out_channels) == ("56×56", 96)  # its maps keep channels last
    mlp = next(r for r in architecture(zoo.get_spec("swin_t.IMAGENET1K_V1")) if r.kind == "linear")
    assert (mlp.out_size, mlp.out_channels) == ("56×56", 384)  # so do its linear layers' outputs
