"""Model family from a torchvision model name, with the year and paper that introduced it.

Years and papers are citations (the seeds tell the zoo's story by year); every metric
comes from the weights' own metadata, never from here.
"""

from __future__ import annotations

# Longest prefix wins, so "resnext" is not read as "resnet".
FAMILIES: dict[str, tuple[int, str]] = {
    "alexnet": (2012, "Krizhevsky et al., ImageNet Classification with Deep CNNs (NeurIPS 2012)"),
    "vgg": (2014, "Simonyan & Zisserman, Very Deep ConvNets (arXiv:1409.1556)"),
    "googlenet": (2014, "Szegedy et al., Going Deeper with Convolutions (arXiv:1409.4842)"),
    "inception": (2015, "Szegedy et al., Rethinking the Inception Architecture (arXiv:1512.00567)"),
    "resnet": (2015, "He et al., Deep Residual Learning (arXiv:1512.03385)"),
    "wide_resnet": (2016, "Zagoruyko & Komodakis, Wide Residual Networks (arXiv:1605.07146)"),
    "resnext": (2016, "Xie et al., Aggregated Residual Transformations (arXiv:1611.05431)"),
    "squeezenet": (2016, "Iandola et al., SqueezeNet (arXiv:1602.07360)"),
    "densenet": (2016, "Huang et al., Densely Connected ConvNets (arXiv:1608.06993)"),
    "mobilenet_v2": (2018, "Sandler et al., MobileNetV2 (arXiv:1801.04381)"),
    "shufflenet": (2018, "Ma et al., ShuffleNet V2 (arXiv:1807.11164)"),
    "mnasnet": (2018, "Tan et al., MnasNet (arXiv:1807.11626)"),
    "mobilenet_v3": (2019, "Howard et al., Searching for MobileNetV3 (arXiv:1905.02244)"),
    "efficientnet": (2019, "Tan & Le, EfficientNet (arXiv:1905.11946)"),
    "efficientnet_lite": (2020, "Liu et al., Higher accuracy on vision models with EfficientNet-Lite (TensorFlow blog, 2020)"),
    "regnet": (2020, "Radosavovic et al., Designing Network Design Spaces (arXiv:2003.13678)"),
    "vit": (2020, "Dosovitskiy et al., An Image is Worth 16x16 Words (arXiv:2010.11929)"),
    "efficientnet_v2": (2021, "Tan & Le, EfficientNetV2 (arXiv:2104.00298)"),
    "swin": (2021, "Liu et al., Swin Transformer (arXiv:2103.14030)"),
    "swin_v2": (2021, "Liu et al., Swin Transformer V2 (arXiv:2111.09883)"),
    "convnext": (2022, "Liu et al., A ConvNet for the 2020s (arXiv:2201.03545)"),
    "maxvit": (2022, "Tu et al., MaxViT (arXiv:2204.01697)"),
}

_ALIASES = {"inception_v3": "inception", "swin_v2_": "swin_v2", "shufflenet_v2": "shufflenet"}


def family_of(model: str) -> str:
    """The family key of a model name, e.g. ``resnext50_32x4d`` → ``resnext``."""
    for alias, fam in _ALIASES.items():
        if model.startswith(alias):
            return fam
    matches = [f for f in FAMILIES if model.startswith(f)]
    if not matches:
        raise KeyError(f"no family known for model {model!r}")
    return max(matches, key=len)


def year_and_paper(family: str) -> tuple[int, str]:
    return FAMILIES[family]


# Where torchvision's network is not the one its paper tabulates, as torchvision's own source says:
# a student matching a table or figure of the paper needs to know before counting channels.
NOT_AS_IN_THE_PAPER: dict[str, str] = {
    "alexnet": ("torchvision's AlexNet follows Krizhevsky's later 'One weird trick' paper (arXiv:1404.5997), as "
                "its docstring says, not the 2012 one: one tower of 64, 192, 384, 256 and 256 channels where the "
                "2012 paper has two GPUs' 96, 256, 384, 384 and 256, and no local response normalisation."),
    "googlenet": ("torchvision's GoogLeNet has a 3×3 convolution where Table 1's '5×5' branch has 5×5 (its source "
                  "calls it a known bug, kept for the trained weights)."),
}


def paper_difference(model: str) -> str:
    """How torchvision's ``model`` differs from its paper's network, or ""."""
    return NOT_AS_IN_THE_PAPER.get(model, "")

