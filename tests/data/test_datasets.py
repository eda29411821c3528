"""Built-in sources, the split, the per-class cap and the decoded-tensor cache."""

from pathlib import Path

import numpy as np
import pytest
import torch

from tlcore import data
from tlcore.data import sources
from tlcore.data.dataset import stratified_split
from tlcore.device import jpeg_decode_device


@pytest.mark.parametrize(("name", "n", "n_classes"), [("digits", 1797, 10), ("faces", 200, 2),
                                                      ("textures", 600, 4), ("shapes", 800, 4)])
def test_builtins_load_offline(name, n, n_classes):
    ds = data.load(name, size=32)
    assert len(ds) == n and len(ds.classes) == n_classes
    assert ds.images.shape == (n, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.shape == (n,) and sorted(ds.profile.counts) == sorted(ds.classes)
    train, val = set(ds.train_idx.tolist()), set(ds.val_idx.tolist())
    assert not train & val and len(train | val) == n and val
    assert ds.images.float().std() > 10  # real pictures, not a constant


def test_textures_validate_on_unseen_regions():
    ds = data.load("textures", size=16)
    # the source gives its own split: a fifth of each class
    assert len(ds.val_idx) == 120 and all(v == 30 for v in np.bincount(ds.labels[ds.val_idx].numpy()))


def test_cap_per_class_makes_a_small_dataset():
    ds = data.load("digits", size=16, max_per_class=5)
    assert len(ds) == 50 and set(ds.profile.counts.values()) == {5}
    assert len(data.load("shapes", size=16, max_per_class=7)) == 28


def test_split_is_seeded_stratified_and_keeps_every_class_in_training():
    labels = np.repeat(np.arange(3), [10, 5, 2])
    a = stratified_split(labels, 0.2, seed=1)
    b = stratified_split(labels, 0.2, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    train, val = a
    assert np.bincount(labels[val]).tolist() == [2, 1, 1]
    assert set(labels[train]) == {0, 1, 2}
    assert not np.array_equal(stratified_split(labels, 0.2, seed=2)[1], val)


def test_second_load_comes_from_the_cache(monkeypatch):
    first = data.load("faces", size=24, seed=3)

    def no_build(*args, **kwargs):
        raise AssertionError("decoded again instead of read from the cache")

    monkeypatch.setattr(sources, "_from_builtin", no_build)
    second = data.load("faces", size=24, seed=3)
    assert second.fingerprint == first.fingerprint and torch.equal(second.images, first.images)
    assert second.profile == first.profile


def test_a_large_entry_is_written_after_the_load_returns_and_served_from_memory_meanwhile(monkeypatch):
    import threading

    monkeypatch.setattr(sources, "BACKGROUND_WRITE_BYTES", 0)  # every entry counts as large here
    release, real_write = threading.Event(), sources._write_entry

    def held_write(path, ds):
        assert release.wait(timeout=30)
        real_write(path, ds)

    monkeypatch.setattr(sources, "_write_entry", held_write)
    first = data.load("faces", size=20, seed=4)  # returns while its entry is still unwritten
    (entry,) = [p for p, (ds, _) in sources._WRITING.items() if ds is first]
    assert not entry.exists()
    monkeypatch.setattr(sources, "_from_builtin", lambda *a, **k: pytest.fail("decoded again"))
    assert data.load("faces", size=20, seed=4) is first  # from memory while it is written
    release.set()
    sources.finish_writes()
    assert entry.exists() and entry.with_suffix(".npy").exists() and not sources._WRITING
    again = data.load("faces", size=20, seed=4)  # from disk now
    assert again is not first and torch.equal(again.images, first.images) and again.fingerprint == first.fingerprint


def test_summary_is_json_ready():
    import json

    s = data.load("faces", size=16).summary()
    assert json.loads(json.dumps(s))["n_images"] == 200
    assert {"n_images", "classes", "counts", "skipped"} <= set(s)


def test_the_fingerprint_sees_every_pixel_and_not_the_thread_count(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from tlcore.data import decode
    from tlcore.data.dataset import _SLICE, fingerprint

    images = torch.randint(0, 256, (3 * _SLICE // (3 * 32 * 32) + 5, 3, 32, 32), dtype=torch.uint8)  # > 3 slices
    labels, classes = torch.zeros(len(images), dtype=torch.long), ["a"]
    reference = fingerprint(images, labels, classes)
    monkeypatch.setattr(decode, "_POOL", ThreadPoolExecutor(max_workers=1))
    assert fingerprint(images, labels, classes) == reference
    changed = images.clone()
    changed[-1, 2, 31, 31] ^= 1  # one bit of the last pixel, in the last slice
    assert fingerprint(changed, labels, classes) != reference
    assert fingerprint(images, labels, ["b"]) != reference


def test_a_fingerprint_of_files_needs_every_files_digest():
    from tlcore.data.dataset import fingerprint

    images, labels = torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long)
    digests = [bytes(32), bytes([1]) * 32]
    assert fingerprint(images, labels, ["a"], files=digests) != fingerprint(images, labels, ["a"], files=digests[::-1])
    with pytest.raises(ValueError, match="digest per image"):
        fingerprint(images, labels, ["a"], files=[b"", b""])  # would name every such dataset alike


def test_every_decoded_image_lands_in_its_own_row():
    """The rows are filled in spans on the decoding threads: each file's pixels exactly once."""
    import io

    from PIL import Image

    from tests.data.conftest import make_zip

    colours = {(k, 2 * i, 255 - i) for k in (0, 200) for i in range(70)}  # 140 files: three spans of 64

    def solid(c):
        buf = io.BytesIO()
        Image.new("RGB", (20, 20), c).save(buf, format="PNG")
        return buf.getvalue()

    blob = make_zip({f"{'ab'[c[0] > 0]}/{c[1]}.png": solid(c) for c in colours})
    file = io.BytesIO(blob)
    file.name = "solid.zip"
    ds = data.load_zip(file, size=16)
    rows = ds.images.flatten(2)  # N×3×256
    assert (rows == rows[:, :, :1]).all()  # every row is one solid colour, nothing left empty
    assert {tuple(r[:, 0].tolist()) for r in rows} == colours and len(rows) == len(colours)


def test_each_image_keeps_its_files_name_through_skips_the_cap_and_the_cache(monkeypatch):
    import io

    from PIL import Image

    from tests.data.conftest import make_zip

    def solid(c):
        buf = io.BytesIO()
        Image.new("RGB", (20, 20), c).save(buf, format="PNG")
        return buf.getvalue()

    entries = {f"{cls}/{i}.png": solid((k, 10 * i, 0)) for k, cls in ((0, "a"), (200, "b")) for i in range(9)}
    entries["a/broken.png"] = b"\x89PNG\r\n\x1a\n not a png"
    file = io.BytesIO(make_zip(entries))
    file.name = "named.zip"
    first = data.load_zip(file, size=16, max_per_class=5, seed=1)
    monkeypatch.setattr(sources, "_from_members", lambda *a, **k: pytest.fail("decoded again"))
    second = data.load_zip(file, size=16, max_per_class=5, seed=1)
    for ds in (first, second):
        assert len(ds.paths) == len(ds) == 10
        for i, name in enumerate(ds.paths):  # the name says the pixels: class by red, number by green
            red, green = ds.images[i, 0, 0, 0].item(), ds.images[i, 1, 0, 0].item()
            assert name == f"{'ab'[red > 0]}/{green // 10}.png" == ds.image_name(i)
    digits = data.load("digits", size=8, max_per_class=2)  # a built-in has no files: its class and index
    assert digits.paths == [] and digits.image_name(3) == f"{digits.classes[int(digits.labels[3])]} #3"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts the process's threads in /proc")
@pytest.mark.parametrize("parallel_op_in_the_pool", [False, True])  # True: the failure this guards against
def test_the_decoding_threads_start_no_openmp_team(monkeypatch, tmp_path, parallel_op_in_the_pool):
    """A live thread that has run a parallel torch op keeps an OpenMP team, and the main thread's
    convolutions then ran 2.5× slower (measured): the pool's threads may run torchvision's JPEG
    decoder (libjpeg-turbo on the calling thread) but nothing parallel. A team shows as threads
    added to the process."""
    import os
    import time
    from concurrent.futures import ThreadPoolExecutor

    from tests.data.conftest import jpeg, png
    from tlcore.data import decode

    monkeypatch.setattr(sources, "jpeg_decode_device", lambda: None)  # the CPU path, on a GPU machine too
    if parallel_op_in_the_pool and not decode._RESIZE_STAYS_ON_THREAD:
        pytest.skip("small JPEGs do not reach torch on this CPU")
    if parallel_op_in_the_pool:
        real = decode._decode_jpeg_here
        monkeypatch.setattr(decode, "_decode_jpeg_here", lambda data: torch.ones(2**22).sum() and real(data))
    pool = ThreadPoolExecutor(max_workers=2)
    list(pool.map(time.sleep, [0.05] * 4))  # both threads started before counting
    monkeypatch.setattr(decode, "_POOL", pool)
    torch.ones(2**22).sum()  # the main thread's own team made before counting
    for k, c in enumerate("ab"):
        (tmp_path / c).mkdir()
        for i in range(6):  # large enough that a parallel kernel would split their resize
            (tmp_path / c / f"{i}.jpg").write_bytes(jpeg(10 * k + i, size=(160, 140)))
            (tmp_path / c / f"{i}.png").write_bytes(png(10 * k + i))
    threads = len(os.listdir("/proc/self/task"))
    ds = data.load_folder(tmp_path, size=128)
    added = len(os.listdir("/proc/self/task")) - threads
    pool.shutdown()
    assert len(ds) == 24
    if parallel_op_in_the_pool:
        assert added > 0 or torch.get_num_threads() == 1
    else:
        assert added == 0


@pytest.mark.parametrize("batch_decoder", [False, True])  # True: the GPU path (a CPU stand-in here)
def test_a_folder_decodes_in_chunks_of_bounded_bytes_with_the_same_result(tmp_path, monkeypatch, batch_decoder):
    from tests.data.conftest import jpeg

    if not batch_decoder:  # Pillow alone, on a GPU machine too
        monkeypatch.setattr(sources, "jpeg_decode_device", lambda: None)
    elif jpeg_decode_device() is None:
        monkeypatch.setattr(sources, "jpeg_decode_device", lambda: torch.device("cpu"))

    for k, c in enumerate("abc"):
        (tmp_path / c).mkdir()
        for i in range(7):
            (tmp_path / c / f"{i}.jpg").write_bytes(jpeg(10 * k + i))
    whole = data.load_folder(tmp_path, size=16)
    budget = 3 * max(f.stat().st_size for f in tmp_path.rglob("*.jpg"))
    held = []
    real = sources.decode_all
    monkeypatch.setattr(sources, "decode_all",
                        lambda readers, *a, **kw: held.append(len(readers)) or real(readers, *a, **kw))
    monkeypatch.setattr(sources, "CHUNK_BYTES", budget)
    monkeypatch.setenv("TLCORE_HOME", str(tmp_path / "fresh-home"))  # decoded again, not read from the cache
    chunked = data.load_folder(tmp_path, size=16)
    assert len(held) > 1 and sum(held) == 21 and max(held) <= 3
    assert torch.equal(chunked.labels, whole.labels)
    if sources.jpeg_decode_device() is None:  # Pillow alone: bit for bit
        assert torch.equal(chunked.images, whole.images)
    else:  # which decoder takes a file depends on timing; GPU and Pillow agree to a few grey levels
        assert ((chunked.images.float() - whole.images.float()).abs().mean(dim=(1, 2, 3)) < 12).all()


def test_the_same_files_keep_their_fingerprint_whichever_decoder_takes_them(tmp_path, monkeypatch):
    """On a GPU machine a file goes to the GPU or to Pillow by timing, and their pixels differ by a
    few grey levels: the fingerprint, which keys every cache and a run's "same images" check, is
    made of the files (and the size they were decoded to), not of the pixels."""
    from tests.data.conftest import jpeg
    from tlcore.data import decode

    for k, c in enumerate("ab"):
        (tmp_path / c).mkdir()
        for i in range(10):
            (tmp_path / c / f"{i}.jpg").write_bytes(jpeg(10 * k + i, size=(64, 48)))
    monkeypatch.setattr(sources, "jpeg_decode_device", lambda: None)
    takes = decode._torchvision_takes
    monkeypatch.setattr(decode, "_torchvision_takes", lambda *a: False)  # Pillow alone
    by_pillow = data.load_folder(tmp_path, size=32)
    monkeypatch.setattr(decode, "_torchvision_takes", takes)
    monkeypatch.setattr(sources, "jpeg_decode_device", lambda: torch.device("cpu"))  # torchvision's decoder
    monkeypatch.setenv("TLCORE_HOME", str(tmp_path / "fresh-home"))  # decoded again
    in_batches = data.load_folder(tmp_path, size=32)
    assert not torch.equal(in_batches.images, by_pillow.images)  # another decoder's pixels…
    assert in_batches.fingerprint == by_pillow.fingerprint  # …of the same files
    assert data.load_folder(tmp_path, size=24).fingerprint != by_pillow.fingerprint
    (tmp_path / "b" / "9.jpg").write_bytes(jpeg(99, size=(64, 48)))
    assert data.load_folder(tmp_path, size=32).fingerprint != by_pillow.fingerprint
