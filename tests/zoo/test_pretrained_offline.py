"""The offline pretrained models are real: they classify bundled photos correctly."""

import pytest
import skimage.data
import torch

from tlcore import zoo

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def top5(model_name: str, image) -> list[str]:
    spec = zoo.get_spec(model_name)
    model = zoo.load(spec)
    x = zoo.eval_transform(spec)(torch.from_numpy(image).permute(2, 0, 1))
    with torch.inference_mode():
        logits = model(x[None])[0]
    return [zoo.imagenet_categories()[i] for i in logits.topk(5).indices]


def test_lite0_sees_a_cat_in_chelsea():
    assert CATS & set(top5("efficientnet_lite0", skimage.data.chelsea()))


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_larger_lites_see_espresso_in_coffee(name):
    assert top5(name, skimage.data.coffee())[0] == "espresso"


def test_loaded_weights_are_not_random():
    spec = zoo.get_spec("efficientnet_lite0")
    a, b = zoo.load(spec), zoo.load(spec, pretrained=False)
    assert not torch.equal(a._fc.weight, b._fc.weight)
    assert torch.equal(a._fc.weight, zoo.load(spec)._fc.weight)
