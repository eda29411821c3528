"""The architecture facts the package ships agree with what the code works out, and cover the zoo."""

import json

import pytest
import torchvision

from scripts.known_architectures import KINDS, wanted
from tlcore import paths, zoo
from tlcore.zoo import facts, loading

# One of each way a network is built and cut: plain stages, stages of blocks, a fixed-padding
# offline model, side branches, grouped stages, a tokens-only transformer, depthwise blocks.
SAMPLE = ("resnet50", "efficientnet_lite0", "inception_v3", "googlenet", "regnet_y_400mf", "vit_b_16",
          "mobilenet_v3_small", "densenet121")
RERUN = "run scripts/known_architectures.py"


def _shipped_or_skip(kind: str) -> dict:
    if not list(facts.SHIPPED.glob(f"*-tv{facts.release()}.json")):
        pytest.skip(f"no facts shipped for torchvision {facts.release()}: they are worked out on first use")
    written_with, known = facts.read_shipped(kind)
    assert written_with is not None, f"{facts.shipped_file(kind).name} is missing: {RERUN}"
    return known


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_shipped_facts_are_read_only_while_their_code_is_unchanged(kind, monkeypatch):
    _shipped_or_skip(kind)
    assert facts.read_shipped(kind)[0] == facts.fingerprint(), f"the code changed since they were written: {RERUN}"
    assert facts.shipped(kind)
    monkeypatch.setattr(facts, "fingerprint", lambda: "other code")
    facts.shipped.cache_clear()
    try:
        assert facts.shipped(kind) == {}  # ignored: worked out again, as without a shipped file
    finally:
        monkeypatch.undo()
        facts.shipped.cache_clear()


def test_only_the_kinds_in_use_ship():
    _shipped_or_skip(loading.ARCH_INFO)
    found = {p.name for p in facts.SHIPPED.glob(f"*-tv{facts.release()}.json")}
    assert found == {facts.shipped_file(k).name for k in KINDS}, RERUN


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_shipped_facts_cover_every_architecture_of_the_zoo(kind):
    shipped = _shipped_or_skip(kind)
    key_of = KINDS[kind][0]
    assert {key_of(s) for s in zoo.list_models() if wanted(kind, s)} <= set(shipped), RERUN


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_shipped_facts_are_what_the_code_works_out(kind):
    shipped = _shipped_or_skip(kind)
    key_of, work_out = KINDS[kind]
    sample = SAMPLE if kind != loading.SMALLEST_INPUT else SAMPLE[:3]  # 2.5 s of bisection each
    for spec in [zoo.get_spec(name) for name in sample]:
        if wanted(kind, spec):  # through JSON, as the file holds them (tuples become lists)
            assert json.loads(json.dumps(work_out(spec))) == shipped[key_of(spec)], f"{spec.model}: {RERUN}"


def test_a_shipped_fact_is_read_and_another_is_worked_out_once_and_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("TLCORE_HOME", str(tmp_path))
    monkeypatch.setattr(facts, "shipped", lambda kind: {"known": 1} if kind == "k" else {})
    calls = []

    def work_out():
        calls.append(1)
        return {"n": 2}

    assert facts.fact("k", "known", work_out) == 1 and not calls
    assert facts.fact("k", "new", work_out) == {"n": 2} == facts.fact("k", "new", work_out)
    assert len(calls) == 1
    kept = paths.read_json(f"k-tv{torchvision.__version__}.json")
    assert kept == {"new": {"n": 2}}  # in the data directory, under the full version


def test_another_torchvision_release_reads_none_of_the_shipped_facts(monkeypatch):
    monkeypatch.setattr(torchvision, "__version__", "0.1.0+cpu")
    facts.shipped.cache_clear()
    try:
        assert facts.release() == "0.1.0" and facts.shipped(loading.ARCH_INFO) == {}
    finally:
        monkeypatch.undo()
        facts.shipped.cache_clear()
