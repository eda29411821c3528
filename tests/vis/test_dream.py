"""DeepDream on bundled and uploaded photos; hostile uploads get a clear message."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from tlcore import data
from tlcore.vis.dream import MIN_SIDE, DreamConfig, deepdream, octaves_for


def test_deepdream_visibly_transforms_a_bundled_photo(lite, no_hooks):
    spec, model = lite
    photo = data.load_photo("chelsea", max_side=128)
    assert photo.shape == (85, 128, 3) and photo.dtype == np.uint8  # aspect kept
    before = {k: v.clone() for k, v in model.state_dict().items()}
    dream = deepdream(spec, model, photo, DreamConfig(layers=("_blocks.6",), octaves=2, steps=4, lr=0.02))
    assert dream.image.shape == photo.shape and dream.image.dtype == np.uint8
    assert np.abs(dream.image.astype(int) - photo.astype(int)).mean() > 8
    assert dream.gain > 1.2  # the layer responds more to the dream than to the photo
    assert no_hooks(model) and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_several_layers_and_a_seed(lite):
    spec, model = lite
    photo = data.load_photo("coffee", max_side=96)
    cfg = DreamConfig(layers=("_blocks.4", "_blocks.10"), octaves=2, steps=2)
    a, b = (deepdream(spec, model, photo, cfg).image for _ in range(2))
    assert np.array_equal(a, b)


def test_small_photos_get_fewer_octaves():
    cfg = DreamConfig(layers=("x",), octaves=5, octave_scale=1.4)
    assert octaves_for(1000, cfg) == 5
    assert octaves_for(MIN_SIDE, cfg) == 1
    assert octaves_for(int(MIN_SIDE * 1.4) + 1, cfg) == 2


def noise() -> Image.Image:
    return Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_uploaded_photos_of_any_mode_become_rgb():
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    for image, fmt in [(rgb, "JPEG"), (rgb.convert("L"), "PNG"), (rgb.convert("RGBA"), "PNG"),
                       (rgb.convert("P"), "GIF"), (rgb.convert("CMYK"), "JPEG"),
                       (Image.fromarray((np.arange(60 * 90).reshape(60, 90) * 7).astype(np.uint16)), "PNG")]:
        photo = data.load_photo(encode(image, fmt), max_side=64)
        assert photo.shape == (43, 64, 3) and photo.dtype == np.uint8, (image.mode, fmt)


@pytest.mark.parametrize(("payload", "message"), [
    (b"%PDF-1.4 not an image", "a PDF document, not an image"),
    (b"plain text, no image", "not an image in an allowed format"),
    (lambda: encode(Image.new("RGB", (64, 64)), "JPEG")[:200], "unreadable image header"),
    (lambda: (lambda b: b[:len(b) // 2])(encode(noise(), "JPEG")), "corrupt or truncated"),
    (lambda: encode(Image.new("1", (10_000, 10_000)), "PNG", optimize=True), "too many pixels"),
    (lambda: encode(Image.new("RGB", (2000, 10)), "PNG"), "extreme aspect ratio"),
])
def test_hostile_uploads_get_a_specific_message(payload, message):
    blob = payload() if callable(payload) else payload
    with pytest.raises(data.DatasetError, match=message):
        data.load_photo(blob)


def test_bad_settings_are_refused(lite):
    spec, model = lite
    photo = data.load_photo("rocket", max_side=64)
    for change, message in [({"layers": ()}, "at least one layer"), ({"layers": ("nope",)}, "no layer"),
                            ({"octaves": 0}, "octaves must be"), ({"lr": 0}, "step size")]:
        with pytest.raises(ValueError, match=message):
            deepdream(spec, model, photo, DreamConfig(**{"layers": ("_blocks.4",), **change}))


def test_a_photo_too_small_for_the_pyramid_is_refused(lite):
    spec, model = lite
    tiny = np.zeros((20, 30, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="at least 64 px"):
        deepdream(spec, model, tiny, DreamConfig(layers=("_blocks.4",)))


def test_a_dream_runs_the_model_in_float32_on_a_cpu_and_takes_any_array(lite, monkeypatch):
    import warnings

    monkeypatch.setenv("TLCORE_CPU_BF16", "1")  # trials would mix on this CPU
    spec, model = lite
    photo = data.load_photo("coffee", max_side=96)[:, ::-1]  # a mirrored view: negative strides
    photo.flags.writeable = False
    seen = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(lambda m, a, out: seen.append(torch.is_autocast_enabled("cpu")))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # torch's warning on a read-only array
            deepdream(spec, model, photo, DreamConfig(layers=("_blocks.4",), octaves=1, steps=2))
    finally:
        handle.remove()
    assert seen and not any(seen)
