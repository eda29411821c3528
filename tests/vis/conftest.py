import pytest

from tlcore import data, zoo


@pytest.fixture(scope="session")
def lite():
    spec = zoo.get_spec("efficientnet_lite0")
    return spec, zoo.load(spec)


@pytest.fixture(scope="session")
def textures():
    return data.load("textures", size=48, max_per_class=6)


@pytest.fixture(scope="session")
def no_hooks():
    """A check that no forward hook is left on any module of a model."""
    return lambda model: not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
