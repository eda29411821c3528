"""Read a model's activations with forward hooks that never outlive the call and never touch
another thread's forward pass.

The app shares one model object between sessions (``st.cache_resource``). A hook registered on
it fires in every thread that runs the model, so each hook here checks the thread that
registered it and does nothing elsewhere: two sessions can extract features or render on the
same model at once. Hooks are removed on leaving the ``with`` block, even after an error or a
cancel (lucent's ``render_vis`` registers hooks on every module per call and never removes them).
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn


class StopForward(Exception):
    """Raised by a capture hook once every target is captured: the rest of the pass is not needed."""


@dataclass(frozen=True)
class Target:
    """A module whose output (or, with ``inputs``, first input) is read under ``name``."""

    name: str
    module: nn.Module
    inputs: bool = False


@contextlib.contextmanager
def thread_hooks(hooks: Sequence[tuple[nn.Module, Callable, bool]]) -> Iterator[None]:
    """Register ``(module, fn, pre)`` hooks that run only in this thread; removed on exit."""
    owner = threading.get_ident()

    def only_here(fn: Callable) -> Callable:
        def hook(*args):
            if threading.get_ident() == owner:
                return fn(*args)
            return None
        hook.per_thread = True  # one of ours: a private copy of the model leaves it behind
        return hook

    with _REGISTRY:
        handles = [module.register_forward_pre_hook(only_here(fn)) if pre
                   else module.register_forward_hook(only_here(fn)) for module, fn, pre in hooks]
    try:
        yield
    finally:
        with _REGISTRY:
            for handle in handles:
                handle.remove()


# Held while hooks are added to or removed from a model, and while one is copied: a copy reads
# every module's hook dict, which another session's hooks would otherwise change under it.
_REGISTRY = threading.Lock()


def private_copy(model: nn.Module) -> nn.Module:
    """A deep copy of a (shared) model to train or convert, without the per-thread hooks that other
    sessions had on it at that moment: they do nothing in this thread, but a Capture's hook would
    keep that session's last activations alive for as long as the copy lives. Other hooks stay.

    The copy's hook dicts are made under the lock and handed to deepcopy ready-made, so it never
    reads the live ones (which another session may change meanwhile) and the lock is held for
    the hooks only, not for the whole copy (seconds for a large model on a CPU)."""
    memo: dict[int, object] = {}
    with _REGISTRY:
        for module in model.modules():
            _kept_hooks(module, memo)
    return copy.deepcopy(model, memo)


def copied_hooks(model: nn.Module) -> tuple[int, ...]:
    """Ids of the forward hooks a ``private_copy`` of ``model`` made now would carry: a copy made
    earlier is stale when they differ (a hook registered since would not run on it)."""
    with _REGISTRY:
        return tuple(id(hook) for module in model.modules()
                     for hooks in (module._forward_hooks, module._forward_pre_hooks)
                     for hook in hooks.values() if not getattr(hook, "per_thread", False))


def _kept_hooks(module: nn.Module, memo: dict[int, object]) -> None:
    """Put into ``memo`` the copies of ``module``'s forward-hook dicts, without our per-thread hooks
    (the flag dicts beside them are keyed by the same hook ids)."""
    kept = {}
    for name in ("_forward_hooks", "_forward_pre_hooks"):
        hooks = getattr(module, name)
        kept[name] = type(hooks)((k, v) for k, v in hooks.items() if not getattr(v, "per_thread", False))
        memo[id(hooks)] = kept[name]
    for name, of in (("_forward_hooks_with_kwargs", "_forward_hooks"), ("_forward_hooks_always_called", "_forward_hooks"),
                     ("_forward_pre_hooks_with_kwargs", "_forward_pre_hooks")):
        flags = getattr(module, name)
        memo[id(flags)] = type(flags)((k, v) for k, v in flags.items() if k in kept[of])


class Capture:
    """``with Capture(model, targets) as cap: acts = cap(x)`` — the targets' activations of one
    forward pass, keyed by name. Each target keeps its first call in a pass (a module shared by
    two places, such as EfficientNet-Lite's one activation module, is read where it is first
    used). With ``stop`` the pass ends as soon as every target is captured, so layers after the
    deepest target never run; gradients still flow to the input through what did run."""

    def __init__(self, model: nn.Module, targets: Sequence[Target], *, stop: bool = True):
        self.model, self.targets, self.stop = model, list(targets), stop
        self._acts: dict[str, torch.Tensor] = {}
        self._hooks = thread_hooks([(t.module, self._hook_for(t), t.inputs) for t in self.targets])

    def _hook_for(self, target: Target) -> Callable:
        def hook(module, args, output=None):
            if target.name in self._acts:
                return
            self._acts[target.name] = args[0] if target.inputs else output
            if self.stop and len(self._acts) == len(self.targets):
                raise StopForward
        return hook

    def __enter__(self) -> Capture:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self._acts = {}
        try:
            self.model(x)
        except StopForward:
            pass
        missing = [t.name for t in self.targets if t.name not in self._acts]
        if missing:
            raise RuntimeError(f"the forward pass never reached {', '.join(missing)}")
        return self._acts


def module_at(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path`` (``named_modules()`` naming), or ValueError with close matches."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        import difflib

        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see `tlcore layers MODEL`)"
        raise ValueError(f"no layer {path!r} in {type(model).__name__}{hint}") from None
