"""The model zoo: one registry, one factory (cf. torchvision ``list_models``/``get_model``)."""

from tlcore.zoo.layers import Layer, layers, middle_layer
from tlcore.zoo.loading import (
    WeightsUnavailableError,
    arch_info,
    blocks_of,
    build,
    build_meta,
    load,
    smallest_input,
)
from tlcore.zoo.preprocess import eval_transform, imagenet_categories, imagenet_labels, predict
from tlcore.zoo.registry import UnknownModelError, get_spec, macs, weights_available
from tlcore.zoo.registry import list_models_specs as list_models
from tlcore.zoo.spec import Block, ModelSpec
from tlcore.zoo.table import zoo_table

__all__ = [
    "Block", "Layer", "ModelSpec", "UnknownModelError", "WeightsUnavailableError", "arch_info", "blocks_of",
    "build", "build_meta", "eval_transform", "imagenet_categories", "imagenet_labels", "get_spec", "layers", "list_models", "middle_layer", "load", "macs", "predict", "smallest_input",
    "weights_available",
    "zoo_table",
]
