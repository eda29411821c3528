"""The optimizer's groups and the learning-rate schedule, as torchvision's references set them."""


import pytest
import torch
from torch import nn

from tlcore import device
from tlcore.finetune import TrialConfig, optim


def test_norm_parameters_and_biases_are_not_decayed():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.LayerNorm(4), nn.Linear(4, 2))
    opt = optim.optimizer(net, TrialConfig(model="m", optimizer="sgd"))
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decay == {id(net[0].weight), id(net[3].weight)}
    undecayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert undecayed == {id(p) for p in net.parameters()} - decay  # norms and biases, each once
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))


def test_head_and_backbone_rates_survive_the_split_into_decay_groups():
    net = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    opt = optim.optimizer(net, TrialConfig(model="m", lr=0.1, backbone_lr_mult=0.1), head_path="1")
    rate = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert rate[id(net[1].weight)] == rate[id(net[1].bias)] == 0.1
    assert rate[id(net[0].weight)] == rate[id(net[0].bias)] == pytest.approx(0.01)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_the_optimizer_is_fused_exactly_when_every_parameter_is_on_a_gpu(name):
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    assert not optim.optimizer(net, TrialConfig(model="m", optimizer=name)).defaults.get("fused")
    if not torch.cuda.is_available():
        return
    net.cuda()
    opt = optim.optimizer(net, TrialConfig(model="m", optimizer=name))
    assert opt.defaults["fused"] is True
    net(torch.randn(4, 3, device="cuda")).sum().backward()
    before = net[0].weight.detach().clone()
    opt.step()  # the fused kernel runs and moves the weights
    assert not torch.equal(before, net[0].weight)


def _trace(cfg: TrialConfig, images_per_epoch: int, batches: list[int]) -> list[float]:
    """The rate each optimizer step used, for steps of the given batch sizes."""
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=cfg.lr)
    sched = optim.Schedule(opt, cfg, images_per_epoch)
    out = []
    for n in batches:
        out.append(opt.param_groups[0]["lr"])
        sched.advance(n)
    return out


def test_cosine_warms_up_then_decays_to_near_zero():
    cfg = TrialConfig(model="m", lr=1.0, epochs=5)
    lrs = _trace(cfg, 100, [5] * 100)  # 5 epochs of 20 steps
    warmup = round(optim.WARMUP_SHARE * 100)
    assert lrs[0] == pytest.approx(0.01) and all(a < b for a, b in zip(lrs[:warmup], lrs[1:warmup + 1], strict=True))
    assert max(lrs) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:], strict=False))
    assert lrs[-1] < 0.01
    assert _trace(TrialConfig(model="m", lr=1.0, epochs=2, schedule="constant"), 9, [3] * 6) == [1.0] * 6


def test_warm_up_never_exceeds_one_epoch():
    lrs = _trace(TrialConfig(model="m", lr=1.0, epochs=50), 10, [5] * 4)
    assert lrs[1] < 1.0 and lrs[2] == pytest.approx(1.0)  # 10 % of 50 epochs is 5: one epoch, then the peak


def test_a_halved_batch_keeps_the_same_curve():
    cfg = TrialConfig(model="m", lr=1.0, epochs=3)
    whole = _trace(cfg, 64, [16] * 12)
    halved = _trace(cfg, 64, [16] * 6 + [8] * 12)  # out of memory half-way: twice the steps after it
    assert halved[:6] == whole[:6]
    assert halved[6::2] == pytest.approx(whole[6:])
    assert halved[-1] < 0.05


def test_mixed_precision_is_bf16_only_where_the_gpu_has_it(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert device.mixed_dtype(cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert device.mixed_dtype(cuda) is torch.float16  # training then scales the loss
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert device.mixed_dtype(cuda) is torch.float16  # bf16 only emulated (T4, V100): fp16 is faster
    assert device.supported_dtypes(cuda) == ("float32", "float16")


def test_a_cpu_mixes_in_bf16_only_with_amx_unless_told(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("TLCORE_CPU_BF16", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert device.mixed_dtype(cpu) is torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert device.mixed_dtype(cpu) is None
    monkeypatch.setenv("TLCORE_CPU_BF16", "1")
    assert device.mixed_dtype(cpu) is torch.bfloat16
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setenv("TLCORE_CPU_BF16", "0")
    assert device.mixed_dtype(cpu) is None
    monkeypatch.setenv("TLCORE_CPU_BF16", "yes")
    with pytest.warns(UserWarning, match="TLCORE_CPU_BF16 must be 0 or 1"):
        assert device.mixed_dtype(cpu) is torch.bfloat16  # the CPU decides
    assert device.mixed_dtype(torch.device("mps")) is None
    monkeypatch.delenv("TLCORE_CPU_BF16")
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")  # a torch build without the private probe
    assert device.mixed_dtype(cpu) is None


def test_the_prefix_cache_keeps_the_trials_precision(monkeypatch):
    from tlcore.finetune import prefix_cache

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert prefix_cache.frozen_dtype(TrialConfig(model="m", precision="float32"), cuda) is torch.float32
    assert prefix_cache.frozen_dtype(TrialConfig(model="m"), cuda) is torch.bfloat16
    monkeypatch.setenv("TLCORE_CPU_BF16", "0")
    assert prefix_cache.frozen_dtype(TrialConfig(model="m"), cpu) is torch.float32
    monkeypatch.setenv("TLCORE_CPU_BF16", "1")  # an AMX CPU
    assert prefix_cache.frozen_dtype(TrialConfig(model="m"), cpu) is torch.bfloat16
    assert prefix_cache.frozen_dtype(TrialConfig(model="m", precision="float32"), cpu) is torch.float32
    # The store keeps what the tail trains in.
    assert prefix_cache.storage_dtype(TrialConfig(model="m", freeze=3), cuda, 32) is torch.bfloat16
    assert prefix_cache.storage_dtype(TrialConfig(model="m", freeze=3, precision="float32"), cuda, 224) is torch.float32
    assert prefix_cache.storage_dtype(TrialConfig(model="m", freeze=3), cpu, 64) is torch.bfloat16
    assert prefix_cache.storage_dtype(TrialConfig(model="m", freeze=3), cpu, 32) is torch.float32  # trains in float32
    monkeypatch.setenv("TLCORE_CPU_BF16", "0")
    assert prefix_cache.storage_dtype(TrialConfig(model="m", freeze=3), cpu, 224) is torch.float32


def _depthwise_then_pointwise() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(8, 8, 5, padding=2, groups=8), nn.Conv2d(8, 4, 1))


def test_a_cpu_trains_depthwise_convolutions_in_float32_and_the_rest_in_bf16_even_grouped_ones():
    cpu, net = torch.device("cpu"), _depthwise_then_pointwise()
    x = torch.randn(2, 8, 6, 6)
    with device.training_autocast(cpu, torch.bfloat16):
        depthwise = net[0](x)
        out = net[1](depthwise)
        with torch.no_grad():  # no backward: the fast bf16 forward stays
            frozen = net[0](x)
    assert (depthwise.dtype, out.dtype, frozen.dtype) == (torch.float32, torch.bfloat16, torch.bfloat16)
    out.float().sum().backward()
    assert net[0].weight.grad is not None and net[0].weight.grad.dtype is torch.float32
    grouped = nn.Conv2d(8, 8, 3, groups=2)  # not depthwise: its bf16 backward is fast
    with device.training_autocast(cpu, torch.bfloat16):
        assert grouped(x).dtype is torch.bfloat16
    with device.training_autocast(cpu, None):  # a float32 trial
        assert net[1](net[0](x)).dtype is torch.float32
    net.requires_grad_(False)  # a frozen depthwise layer on an input without grad: nothing to differentiate
    with device.training_autocast(cpu, torch.bfloat16):
        assert net[0](x).dtype is torch.bfloat16
