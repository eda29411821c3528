"""Block lists over the whole registry: complete, disjoint, in forward order, head last."""

import pytest
import torch

from tlcore import zoo
from tlcore.zoo.blocks import block_list, depth

SPECS = zoo.list_models()
# One architecture per (model, builder arguments): weights sharing an architecture share blocks.
ARCHS = list({(s.model, s.arch_kwargs): s for s in SPECS}.values())


def _recorder(path, order, calls):
    def hook(module, args):  # returns None: the input passes through unchanged
        calls.append(path)
        order.setdefault(path, len(calls))

    return hook


def _fire_order(model, blocks, size):
    """Index of the first forward call of each block member (None: never ran)."""
    order, calls = {}, []
    handles = []
    for block in blocks:
        for path in block.members:
            try:
                module = model.get_submodule(path)
            except AttributeError:
                continue  # a bare parameter (ViT's class token) has no hook
            handles.append(module.register_forward_pre_hook(_recorder(path, order, calls)))
    with torch.no_grad():
        model(torch.empty(1, 3, size, size, device="meta"))
    for h in handles:
        h.remove()
    return order


@pytest.mark.parametrize("spec", ARCHS, ids=lambda s: s.key)
def test_blocks_cover_every_parameter_once_in_forward_order(spec):
    model = zoo.build_meta(spec)
    blocks = block_list(model, spec.family)
    assert 3 <= len(blocks) <= 40
    assert blocks[-1].name == "head" and len({b.name for b in blocks}) == len(blocks)

    owner = {}
    for i, block in enumerate(blocks):
        for path in block.members:
            try:
                params = dict(model.get_submodule(path).named_parameters(prefix=path))
            except AttributeError:
                params = {path: model.get_parameter(path)}
            for name in params:
                assert name not in owner, f"{name} in two blocks"
                owner[name] = i
    assert set(owner) == {n for n, _ in model.named_parameters()}
    assert sum(b.params for b in blocks) == sum(p.numel() for p in model.parameters())

    # The classifier (last layer with num_classes outputs) lives in the head.
    last = [n for n, m in model.named_modules()
            if getattr(m, "out_features", getattr(m, "out_channels", None)) == spec.num_classes]
    assert any(last[-1] == p or last[-1].startswith(p + ".") for p in blocks[-1].members)

    fired = _fire_order(model, blocks, spec.crop_size)
    spans = [[fired[p] for p in b.members if p in fired] for b in blocks]
    spans = [s for s in spans if s]
    for earlier, later in zip(spans, spans[1:], strict=False):
        assert max(earlier) < min(later), "blocks out of forward order"


@pytest.mark.parametrize(("name", "paper"), [
    ("alexnet", 8), ("vgg16", 16), ("googlenet", 22), ("resnet18", 18), ("resnet152", 152),
    ("densenet121", 121), ("squeezenet1_0", 18),
    ("efficientnet_lite0", 50),  # its convolutions subclass nn.Conv2d (static "same" padding): still counted
])
def test_depth_is_the_papers_count_of_weight_layers_on_the_longest_path(name, paper):
    assert depth(zoo.build_meta(zoo.get_spec(name))) == paper


def test_arch_info_is_cached_and_matches_a_fresh_build():
    spec = zoo.get_spec("resnet50")
    info = zoo.arch_info(spec)
    assert [b["name"] for b in info["blocks"]] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert info["depth"] == depth(zoo.build_meta(spec)) == 50 and info["weight_layers"] == 54
    assert zoo.blocks_of(spec)[1].params == sum(p.numel() for p in zoo.build_meta(spec).layer1.parameters())


@pytest.mark.parametrize("name", ["resnet50", "vit_b_16", "regnet_y_400mf", "efficientnet_lite0"])
def test_the_meta_build_skips_initialisation_and_nothing_else(name):
    """Same modules, shapes and buffers as a plain meta-device build, and a model built meanwhile in
    another thread is initialised as usual (the skipping mode is thread-local)."""
    import threading

    from tlcore.zoo import loading

    spec = zoo.get_spec(name)
    with loading._regnet_widths_on_cpu(), torch.device("meta"):
        plain = loading.build(spec).eval()
    built = {}
    started = threading.Event()

    def build_real():
        started.wait()
        built["weight"] = torch.nn.Linear(64, 64).weight.detach()

    other = threading.Thread(target=build_real)
    other.start()
    real_init = torch.nn.init.kaiming_uniform_

    def init_then_let_the_other_thread_build(*args, **kwargs):
        if threading.current_thread() is not other and not started.is_set():
            started.set()
            other.join(timeout=30)  # the other thread builds while this one is inside the meta build
        return real_init(*args, **kwargs)

    torch.nn.init.kaiming_uniform_ = init_then_let_the_other_thread_build
    try:
        fast = zoo.build_meta(spec)
    finally:
        torch.nn.init.kaiming_uniform_ = real_init
        started.set()
        other.join()

    def shapes(m):
        return [(n, tuple(t.shape)) for n, t in [*m.named_parameters(), *m.named_buffers()]]

    assert shapes(fast) == shapes(plain) and depth(fast) == depth(plain)
    assert block_list(fast, spec.family) == block_list(plain, spec.family)
    assert built["weight"].abs().sum() > 0 and built["weight"].std() > 0.01  # really initialised


@pytest.mark.parametrize(("model", "names"), [
    ("vgg16", ["stem", "features.5-9", "features.10-16", "features.17-23", "features.24-30", "head"]),
    ("densenet121", ["stem", "denseblock1", "denseblock2", "denseblock3", "denseblock4", "head"]),
    ("googlenet", ["stem", "inception3", "inception4", "inception5", "head"]),
    ("regnet_y_400mf", ["stem", "trunk_output.block1", "trunk_output.block2",
                        "trunk_output.block3", "trunk_output.block4", "head"]),
])
def test_family_block_names(model, names):
    assert [b.name for b in zoo.blocks_of(zoo.get_spec(model))] == names


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0", "densenet121", "swin_t", "vgg11",
                                  "inception_v3", "squeezenet1_0", "vit_b_16"])
def test_split_at_every_depth_is_exact_or_declined(name):
    from tlcore.zoo.split import check, split

    spec = zoo.get_spec(name)
    model = zoo.build(spec).eval()
    # Exactness does not depend on the image size: 96 px (ViT takes only its own) costs half the time.
    size = spec.crop_size if spec.family == "vit" else 96
    x = torch.randn(2, 3, size, size)
    results = []
    for k in range(1, len(zoo.blocks_of(spec))):
        parts = split(model, zoo.blocks_of(spec), k)
        results.append(parts is None or check(model, *parts, x))
        if parts is not None:  # every parameter of the trainable blocks lives in the tail
            tail_params = {id(p) for p in parts[1].parameters()}
            for block in zoo.blocks_of(spec)[k:]:
                for path in block.members:
                    if path == "AuxLogits":  # Inception's auxiliary head runs in training only
                        continue
                    try:
                        params = model.get_submodule(path).parameters()
                    except AttributeError:
                        params = [model.get_parameter(path)]
                    assert all(id(p) in tail_params for p in params), (k, path)
    assert all(results)


def test_split_works_for_the_common_cnns():
    from tlcore.zoo.split import split

    for name in ("resnet18", "efficientnet_lite0", "vgg11"):
        spec = zoo.get_spec(name)
        model = zoo.build(spec)
        assert all(split(model, zoo.blocks_of(spec), k) is not None for k in range(1, len(zoo.blocks_of(spec))))


def test_a_second_copy_of_an_architecture_is_split_without_tracing_and_over_its_own_modules(monkeypatch):
    import copy

    from tlcore.zoo import split as split_module

    spec = zoo.get_spec("resnet18")
    first = zoo.build(spec).eval()
    blocks = zoo.blocks_of(spec)
    assert split_module.split(first, blocks, 3, architecture=spec.architecture) is not None
    second = copy.deepcopy(first)
    with torch.no_grad():
        for p in second.parameters():
            p.add_(0.01 * torch.randn_like(p))  # another model of the same architecture
    monkeypatch.setattr(split_module, "_trace", lambda model: pytest.fail("traced again"))
    prefix, tail = split_module.split(second, blocks, 3, architecture=spec.architecture)
    assert split_module.check(second, prefix, tail, torch.randn(2, 3, 64, 64))
    ours = {id(p) for p in second.parameters()}
    assert {id(p) for p in tail.parameters()} <= ours and {id(p) for p in prefix.parameters()} <= ours


def test_architectures_with_the_same_module_classes_keep_graphs_of_their_own():
    """The tracer writes plain attributes into the graph (Lite2's depthwise groups are not Lite1's),
    though both have the same module classes at the same paths."""
    from tlcore.zoo.split import check, split

    x = torch.randn(2, 3, 64, 64)
    for name in ("efficientnet_lite1", "efficientnet_lite2"):
        spec = zoo.get_spec(name)
        model = zoo.build(spec).eval()
        parts = split(model, zoo.blocks_of(spec), 4, architecture=spec.architecture)
        assert parts is not None and check(model, *parts, x), name


def test_a_graph_with_tracer_constants_is_not_kept_and_no_first_model_is_kept_alive():
    import gc
    import weakref

    from torch import nn

    from tlcore.zoo import split as split_module
    from tlcore.zoo.spec import Block

    class Doubles(nn.Module):  # torch.tensor in forward: the tracer keeps it on the traced model
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)

        def forward(self, x):
            return self.b(self.a(x) * torch.tensor([2.0]))

    blocks = (Block("a", ("a",), 0), Block("b", ("b",), 0))
    x = torch.randn(1, 3, 12, 12)
    for _ in range(2):  # the second copy is traced again, not rebuilt from the first's constants
        model = Doubles().eval()
        parts = split_module.split(model, blocks, 1, architecture="doubles-test")
        assert parts is None or split_module.check(model, *parts, x)
    assert "doubles-test" not in split_module._GRAPHS

    spec = zoo.get_spec("resnet18")
    model = zoo.build(spec)
    split_module.split(model, zoo.blocks_of(spec), 2, architecture=("kept-alive-test",))
    weight = weakref.ref(model.fc.weight)
    del model
    gc.collect()
    assert ("kept-alive-test",) in split_module._GRAPHS and weight() is None  # the cache holds no model
