"""The registry against torchvision's own metadata, parametrised over every weight."""

import math
import os

import pytest
import torchvision
from torchvision.models import get_model_weights, list_models

from tlcore import zoo
from tlcore.zoo import lite

TV_WEIGHTS = [(m, w) for m in list_models(module=torchvision.models) for w in get_model_weights(m)]


def test_every_torchvision_classification_weight_is_registered():
    keys = {s.key for s in zoo.list_models() if s.source == "torchvision"}
    assert len(TV_WEIGHTS) > 50  # the installed torchvision's classification weights (115 in 0.29)
    assert keys == {f"{m}.{w.name}" for m, w in TV_WEIGHTS}


@pytest.mark.parametrize(("model", "weights"), TV_WEIGHTS, ids=lambda v: getattr(v, "name", v))
def test_spec_matches_torchvision_metadata(model, weights):
    spec = zoo.get_spec(f"{model}.{weights.name}")
    meta = weights.meta
    assert spec.params == meta["num_params"]
    assert spec.gflops == meta["_ops"]
    assert spec.file_size_mb == meta["_file_size"]
    metrics = meta["_metrics"]["ImageNet-1K"]
    for ours, theirs in ((spec.acc1, metrics["acc@1"]), (spec.acc5, metrics["acc@5"])):
        assert (math.isnan(ours) and math.isnan(theirs)) or ours == theirs
    transform = weights.transforms()
    assert spec.crop_size == transform.crop_size[0]
    assert spec.resize_size == transform.resize_size[0]
    assert spec.mean == tuple(transform.mean) and spec.std == tuple(transform.std)
    assert spec.is_default == (weights is get_model_weights(model).DEFAULT)
    assert spec.weights_file.endswith(os.path.basename(weights.url))


def test_offline_lite_models_are_registered_and_available():
    for item in lite.LITE_MODELS:
        spec = zoo.get_spec(item.model)
        assert zoo.weights_available(spec)
        assert spec.mean == spec.std == (0.5, 0.5, 0.5)
        assert spec.acc1 == item.reported_acc1 and spec.metrics_source == lite.TF_RELEASE
        model = lite.build(item)
        assert spec.params == sum(p.numel() for p in model.parameters())
    assert zoo.get_spec("efficientnet_lite0").params == 4_652_008


def test_macs_counter_agrees_with_torchvision_ops():
    # The Lite GFLOPs are counted by us; the same counter must reproduce torchvision's figure.
    spec = zoo.get_spec("resnet50")
    assert zoo.macs(zoo.build_meta(spec), spec.crop_size) == pytest.approx(spec.gflops, rel=0.01)


def test_lookup_by_model_name_gives_default_weights():
    assert zoo.get_spec("resnet50").key == "resnet50.IMAGENET1K_V2"
    assert zoo.get_spec("resnet50.IMAGENET1K_V1").weights == "IMAGENET1K_V1"


def test_unknown_model_suggests_close_matches():
    with pytest.raises(zoo.UnknownModelError, match="did you mean: resnet18"):
        zoo.get_spec("resnt18")


def test_weights_available_reads_the_hub_cache_without_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = zoo.get_spec("resnet18")
    assert spec.weights_file.startswith(str(tmp_path))
    assert not zoo.weights_available(spec)
    os.makedirs(os.path.dirname(spec.weights_file))
    open(spec.weights_file, "wb").close()
    assert zoo.weights_available(spec)


def test_missing_weights_offline_give_a_clear_error(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.models._api as api

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(api, "load_state_dict_from_url", no_network)
    spec = zoo.get_spec("resnet18")
    with pytest.raises(zoo.WeightsUnavailableError) as err:
        zoo.load(spec)
    assert spec.weights_file in str(err.value) and spec.weights_url in str(err.value)


def test_zoo_table_has_a_row_per_weight():
    table = zoo.zoo_table()
    assert len(table) == len(TV_WEIGHTS) + len(lite.LITE_MODELS) and table.key.is_unique
    assert set(table[table.weights_available].key) >= {s.key for s in zoo.list_models()
                                                      if s.family == "efficientnet_lite"}
    assert (table.depth > 0).all() and (table.blocks >= 3).all()
