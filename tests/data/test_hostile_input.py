"""DESIGN §8: each kind of bad input is skipped or refused with a clear reason, never a crash."""

import io
import os
import subprocess
import sys
import urllib.error
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data.conftest import encode, jpeg, make_zip, photo
from tlcore import data, paths
from tlcore.data import archive
from tlcore.data.decode import BadImage, decode_bytes
from tlcore.settings import Limits


def load_zip_bytes(blob: bytes, tmp_path, **kw) -> data.Dataset:
    path = tmp_path / "upload.zip"
    path.write_bytes(blob)
    return data.load_zip(path, **kw)


def reasons(ds: data.Dataset) -> dict[str, str]:
    return {s.path: s.reason for s in ds.skipped}


def test_a_clean_zip_loads(tmp_path, good_entries):
    ds = load_zip_bytes(make_zip(good_entries), tmp_path, size=32)
    assert ds.classes == ["cats", "dogs"] and len(ds) == 12 and ds.images.dtype == torch.uint8
    assert ds.images.shape == (12, 3, 32, 32) and not ds.skipped
    assert ds.profile.formats == {"JPEG": 6, "PNG": 6}


def test_bad_files_are_skipped_with_reasons_and_the_rest_loads(tmp_path, good_entries, bomb_png):
    good = jpeg(7)
    entries = dict(good_entries)
    entries.update({
        "cats/corrupt.jpg": b"\xff\xd8\xff\xe0" + os.urandom(2000),
        "cats/truncated.jpg": good[: len(good) // 3],
        "cats/notes.txt": b"just some text",
        "cats/bomb.png": bomb_png,
        "dogs/strip.png": encode(Image.new("RGB", (5000, 1)), "PNG"),
        "__MACOSX/cats/._c0.jpg": b"resource fork",
        "cats/.hidden.jpg": good,
        "dogs/Thumbs.db": b"cache",
        "../escape.jpg": good,
        "/etc/passwd.jpg": good,
        "loose.jpg": good,
    })
    blob = make_zip(entries, symlinks={"dogs/link.jpg": "/etc/passwd"})
    ds = load_zip_bytes(blob, tmp_path, size=32)
    assert len(ds) == 12  # every good image, nothing else
    why = reasons(ds)
    assert "not an image" in why["cats/notes.txt"]
    assert "corrupt" in why["cats/truncated.jpg"] or "unreadable" in why["cats/truncated.jpg"]
    assert "cats/corrupt.jpg" in why
    assert "decompression bomb" in why["cats/bomb.png"] or "too many pixels" in why["cats/bomb.png"]
    assert "aspect ratio" in why["dogs/strip.png"]
    assert why["dogs/link.jpg"] == "symbolic link"
    assert why["__MACOSX/cats/._c0.jpg"] == why["dogs/Thumbs.db"] == "system file"
    assert why["cats/.hidden.jpg"] == "system file"
    assert "escapes" in why["../escape.jpg"] and why["/etc/passwd.jpg"] == "absolute path"
    assert why["loose.jpg"] == "not inside a class folder"


def test_nothing_is_written_outside_the_cache(tmp_path, good_entries):
    entries = dict(good_entries)
    entries["../../escape.jpg"] = jpeg(1)
    before = set(os.listdir(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    load_zip_bytes(make_zip(entries), work, size=16)
    assert set(os.listdir(tmp_path)) == before | {"work"}
    assert sorted(os.listdir(work)) == ["upload.zip"]  # the archive was read, never extracted


@pytest.mark.parametrize(("mode", "check"), [
    ("L", lambda a: a[..., 0].tolist() == a[..., 1].tolist()),
    ("LA", lambda a: a.min() >= 0),
    ("RGBA", lambda a: (a == 255).all()),  # fully transparent → composited on white
    ("CMYK", lambda a: a.shape[-1] == 3),
    ("P", lambda a: a.shape[-1] == 3),
    ("1", lambda a: a.std() > 0),  # dithered noise survives (downscaling makes greys)
    ("I;16", lambda a: a.max() > 200 and a.min() < 50),  # 12-bit range stretched, not black
    ("RGBA half", lambda a: (abs(a.astype(int) - [132, 137, 142]) <= 1).all()),  # 50 % on white
    ("P transparent", lambda a: (a == 255).all()),  # the transparent index → white
])
@pytest.mark.parametrize("side", [32, 256])  # 256 → 16: Pillow's reduce() runs first, in the file's mode
def test_every_mode_becomes_rgb(mode, check, side):
    if mode == "I;16":
        arr = np.linspace(0, 4095, side * side).reshape(side, side).astype(np.uint16)
        image = Image.fromarray(arr)  # uint16 → mode I;16
        blob = encode(image, "PNG")
    elif mode.startswith("RGBA"):
        blob = encode(Image.new("RGBA", (side, side), (10, 20, 30, 0 if mode == "RGBA" else 128)), "PNG")
    elif mode == "P transparent":
        blob = encode(Image.new("P", (side, side), 0), "PNG", transparency=0)
    elif mode == "CMYK":
        blob = encode(Image.new("CMYK", (side, side), (0, 255, 0, 0)), "JPEG")
    else:
        blob = encode(photo(3, size=(side, side)).convert(mode), "PNG" if mode != "CMYK" else "JPEG")
    decoded = decode_bytes(blob, 16, Limits())
    assert decoded.pixels.shape == (16, 16, 3) and decoded.pixels.dtype == np.uint8
    assert decoded.mode.startswith(mode[0])
    assert check(decoded.pixels)


def test_large_and_odd_sizes_decode_without_blowing_up_memory():
    wide = encode(photo(1, size=(4000, 100)), "JPEG")
    decoded = decode_bytes(wide, 64, Limits())
    assert decoded.pixels.shape == (64, 64, 3) and (decoded.width, decoded.height) == (4000, 100)
    with pytest.raises(BadImage, match="too many pixels"):
        decode_bytes(encode(Image.new("L", (3000, 3000)), "PNG"), 64, Limits(max_pixels=1_000_000))


def test_one_class_and_empty_inputs_are_refused_with_the_layout(tmp_path):
    with pytest.raises(data.DatasetError, match="only one class") as err:
        load_zip_bytes(make_zip({"cats/a.jpg": jpeg(1), "cats/b.jpg": jpeg(2)}), tmp_path)
    assert "one folder per class" in str(err.value)
    with pytest.raises(data.DatasetError, match="no usable image inside a class folder"):
        load_zip_bytes(make_zip({"readme.txt": b"hi"}), tmp_path)
    with pytest.raises(data.DatasetError, match="no usable image"):
        load_zip_bytes(make_zip({"a/x.txt": b"no", "b/y.txt": b"no"}), tmp_path)
    with pytest.raises(data.DatasetError, match="not a readable zip"):
        load_zip_bytes(b"PK\x03\x04 this is not really a zip", tmp_path)


def stored_zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, blob in entries.items():
            zf.writestr(name, blob)
    return buf.getvalue()


def test_a_zip_member_with_a_bad_checksum_is_skipped_and_the_rest_loads(tmp_path, good_entries):
    blob = bytearray(stored_zip(good_entries))
    start = blob.index(good_entries["cats/c0.jpg"])
    blob[start + 100] ^= 1  # one flipped bit in the stored bytes: zipfile's CRC check fails
    ds = load_zip_bytes(bytes(blob), tmp_path, size=16)
    assert len(ds) == 11 and "Bad CRC-32" in reasons(ds)["cats/c0.jpg"]


def with_zip_headers(blob: bytes, *, flags: int = 0, method: int | None = None) -> bytes:
    """Every member's local and central header given general-purpose ``flags`` (bit 0: encrypted)
    or a compression ``method`` (9: Deflate64), as other zip tools write them."""
    out = bytearray(blob)
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = out.find(signature)
        while at != -1:
            out[at + flags_at] |= flags
            if method is not None:
                out[at + flags_at + 2:at + flags_at + 4] = method.to_bytes(2, "little")
            at = out.find(signature, at + 4)
    return bytes(out)


@pytest.mark.parametrize("headers, reason", [
    (dict(flags=1), "encrypted: a password-protected zip cannot be read"),
    (dict(method=9), "compressed with a method Python cannot unpack (zip method 9"),
])
def test_an_unreadable_zip_is_refused_saying_why_for_its_files(tmp_path, good_entries, headers, reason):
    with pytest.raises(data.DatasetError) as err:
        load_zip_bytes(with_zip_headers(stored_zip(good_entries), **headers), tmp_path, size=16)
    assert f"(12 files skipped: {reason}" in str(err.value) and "(12 files, e.g. cats/c0.jpg)" in str(err.value)


def test_an_archive_among_the_images_is_named_in_the_refusal(tmp_path):
    inner = make_zip({"cats/a.jpg": jpeg(1)})
    with pytest.raises(data.DatasetError, match="only one class") as err:
        load_zip_bytes(make_zip({"cats/more.zip": inner, "dogs/a.jpg": jpeg(2), "dogs/b.jpg": jpeg(3)}), tmp_path)
    assert "(1 file skipped: cats/more.zip: an archive among the images: unpack it" in str(err.value)


def test_a_file_name_that_is_not_utf8_loads_and_prints(tmp_path, good_entries, capsys):
    root = tmp_path / "pets"
    for name, blob in good_entries.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(blob)
    try:  # a Latin-1 name, as old cameras and Windows archives leave them
        with open(bytes(root / "dogs") + b"/caf\xe9.jpg", "wb") as f:
            f.write(jpeg(9))
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    ds = data.load(str(root), size=16)
    assert len(ds) == 13 and ds.classes == ["cats", "dogs"]
    from tlcore.cli import main

    assert main(["data", str(root), "--size", "16"]) == 0 and "13 images" in capsys.readouterr().out


def test_a_class_with_one_image_trains_but_is_flagged(tmp_path, good_entries):
    entries = dict(good_entries)
    entries["birds/only.jpg"] = jpeg(42)
    ds = load_zip_bytes(make_zip(entries), tmp_path, size=16)
    bird = ds.classes.index("birds")
    assert ds.profile.single_image_classes == ["birds"]
    assert bird in ds.labels[ds.train_idx].tolist() and bird not in ds.labels[ds.val_idx].tolist()


def test_archive_caps_refuse_huge_uploads():
    blob = make_zip({f"c{i % 2}/{i}.jpg": b"x" for i in range(30)})
    with pytest.raises(data.DatasetError, match="limit is 10"):
        archive.zip_members(io.BytesIO(blob), Limits(max_members=10))
    blob = make_zip({"a/1.jpg": os.urandom(5000), "b/2.jpg": os.urandom(5000)})
    with pytest.raises(data.DatasetError, match="unpacks to more than"):
        archive.zip_members(io.BytesIO(blob), Limits(max_total_bytes=6000))
    members, skipped = archive.zip_members(io.BytesIO(blob), Limits(max_member_bytes=1000))
    assert not members and all("larger than" in s.reason for s in skipped)


def test_zip_bomb_members_are_skipped():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a/zeros.png", b"\x00" * (5 * 2**20))  # ~1000:1
    members, skipped = archive.zip_members(io.BytesIO(buf.getvalue()), Limits())
    assert not members and "compression ratio" in skipped[0].reason


def test_wrapping_and_split_folders_are_looked_through(tmp_path):
    entries = {"my_data/train/cat/1.jpg": jpeg(1), "my_data/train/dog/2.jpg": jpeg(2),
               "my_data/val/cat/3.jpg": jpeg(3), "my_data/val/dog/4.jpg": jpeg(4)}
    ds = load_zip_bytes(make_zip(entries), tmp_path, size=16)
    assert ds.classes == ["cat", "dog"] and len(ds) == 4


def test_folder_upload_and_local_folder(tmp_path, good_entries):
    ds = data.load_uploads([(f"pets/{k}", v) for k, v in good_entries.items()], size=16)
    assert ds.classes == ["cats", "dogs"] and len(ds) == 12
    root = tmp_path / "pets"
    for name, blob in good_entries.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(blob)
    os.symlink("/etc/passwd", root / "cats" / "link.jpg")
    os.symlink(root / "dogs", root / "more_dogs")  # a linked folder is not followed either
    os.mkfifo(root / "dogs" / "pipe.jpg")  # reading it would block the loader for ever
    ds = data.load(str(root), size=16)
    why = reasons(ds)
    assert len(ds) == 12 and why["cats/link.jpg"] == why["more_dogs"] == "symbolic link"
    assert why["dogs/pipe.jpg"] == "not a regular file"


def test_an_unreadable_sub_folder_is_skipped_with_its_reason(tmp_path, good_entries, monkeypatch):
    root = tmp_path / "pets"
    for name, blob in good_entries.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(blob)
    (root / "secret").mkdir()
    scandir = os.scandir

    def guarded(path):  # tests run as root here, so chmod 000 would not stop a read
        if str(path).endswith("secret"):
            raise PermissionError(13, "Permission denied")
        return scandir(path)

    monkeypatch.setattr(archive.os, "scandir", guarded)
    ds = data.load(str(root), size=16)
    assert len(ds) == 12 and reasons(ds)["secret"] == "folder cannot be read (Permission denied)"


def test_local_paths_are_refused_in_demo_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("TLCORE_DEMO", "1")
    with pytest.raises(data.DatasetError, match="disabled in demo mode"):
        data.load(str(tmp_path))
    assert data.load("faces", size=16)  # built-ins still work


def test_torchvision_dataset_offline_gives_a_clear_message(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(data.DatasetUnavailableError, match="could not be downloaded"):
        data.load("torchvision:cifar10")
    with pytest.raises(data.DatasetError, match="choose one of"):
        data.load("torchvision:imagenet")
    monkeypatch.setenv("TLCORE_DEMO", "1")  # a visitor: no server path, no advice only the owner can follow
    with pytest.raises(data.DatasetUnavailableError, match="not on this server") as err:
        data.load("torchvision:cifar10")
    assert str(paths.home()) not in str(err.value) and "Connect" not in str(err.value)


def test_bad_parameters_are_refused():
    for kw, msg in [({"size": 4}, "resolution"), ({"max_per_class": 0}, "at least 1"),
                    ({"val_fraction": 1.5}, "validation fraction")]:
        with pytest.raises(data.DatasetError, match=msg):
            data.load("faces", **kw)


def test_cli_on_hostile_zip_prints_no_traceback(tmp_path, good_entries, bomb_png, capsys, monkeypatch):
    from tlcore.cli import main

    entries = dict(good_entries, **{"cats/bomb.png": bomb_png, "../x.jpg": jpeg(1), "cats/t.txt": b"t"})
    (tmp_path / "bad.zip").write_bytes(make_zip(entries))
    (tmp_path / "one.zip").write_bytes(make_zip({"cats/a.jpg": jpeg(1)}))
    env = dict(os.environ, TLCORE_HOME=str(tmp_path / "home"))
    # a real process once (nothing else on its stderr); the refusals in this one (~5 s a start)
    ok = subprocess.run([sys.executable, "-m", "tlcore", "data", str(tmp_path / "bad.zip"), "--format",
                         "json", "--size", "16"], capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0 and "Traceback" not in ok.stderr
    monkeypatch.setenv("TLCORE_HOME", env["TLCORE_HOME"])
    for target in ("one.zip", "missing.zip"):
        assert main(["data", str(tmp_path / target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("tlcore: error:") and len(err.strip().splitlines()) == 1, err


MEMORY_PROBE = """
import io, resource, sys
from PIL import Image
from tlcore.data import decode
from tlcore.settings import Limits
image = Image.new("P", (6300, 6300))  # 39.7 MP, under the 40 MP limit; 5 KB as a PNG
buf = io.BytesIO()
image.save(buf, "PNG", transparency=0)
del image
blob = buf.getvalue()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = decode.decode_all([lambda: blob] * 16, 32, Limits())
assert all(isinstance(r, decode.Decoded) for r in results), results[0]
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_a_hostile_upload_of_small_pixel_bombs_stays_within_memory():
    """16 palette PNGs of 40 MP, 80 KB in all, on 8 decoding threads (the hosted demo has more
    cores): each is resized before its colours are converted, at most two large images decode at
    once, and what they freed goes back to the system. The process grew by 2.2 GB before, 0.7 GB
    now (two images of 40 MP at 4 bytes a pixel, and the resize's copy)."""
    env = dict(os.environ, TLCORE_DECODE_THREADS="8")
    proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.strip()) < 1400  # MB


@pytest.mark.parametrize("blob, reason", [
    (b"", "empty file (0 bytes)"),
    (b"\x00\x00\x00\x1cftypavif" + bytes(40), "an AVIF image, not supported"),
    (b"\x00\x00\x00\x18ftypheic" + bytes(40), "a HEIC image (iPhone), not supported"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "an SVG drawing, not a bitmap"),
    (b"%PDF-1.4\n", "a PDF document, not an image"),
    (encode(Image.new("RGB", (8, 8)), "PNG")[:16] + b"\xff" * 40, "a PNG whose header is corrupt"),
    (b"just some text", "not an image in an allowed format"),
])
def test_a_file_that_is_not_a_usable_image_is_named_for_what_it_is(blob, reason):
    """The reason says what the file is (an iPhone's HEIC, an empty file) and what is allowed."""
    with pytest.raises(BadImage) as err:
        decode_bytes(blob, 16, Limits())
    assert str(err.value).startswith(reason) and ("PNG" in str(err.value) or not blob)
