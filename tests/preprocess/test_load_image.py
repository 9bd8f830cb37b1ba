"""load_image: every format and mode people upload, upright, and a clear error for the rest."""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from digitlab.errors import DigitlabError
from digitlab.preprocess import MAX_IMAGE_BYTES, clip_box, load_image, prepare, to_mnist


@pytest.fixture(scope="module")
def upload(digit_of, h) -> np.ndarray:
    """A 3 written in dark ink on light paper, 120×100, off centre."""
    return h.on_paper(h.place(h.enlarge(digit_of(3), 70), (120, 100), (20, 12)))


@pytest.fixture(scope="module")
def reference(upload) -> np.ndarray:
    return to_mnist(Image.fromarray(upload, "L"))


def _as_mode(gray: np.ndarray, mode: str) -> Image.Image:
    img = Image.fromarray(gray, "L")
    if mode == "I;16":
        return Image.fromarray(gray.astype(np.uint16) * 257)
    if mode == "1":
        return img.point(lambda v: 255 if v > 128 else 0).convert("1")
    if mode == "P":
        return img.convert("RGB").quantize(16)
    if mode == "LA":
        return Image.merge("LA", (img, Image.new("L", img.size, 255)))
    return img.convert(mode)


FORMATS = [
    ("PNG", "L"),
    ("PNG", "RGB"),
    ("PNG", "RGBA"),
    ("PNG", "LA"),
    ("PNG", "P"),
    ("PNG", "I;16"),
    ("PNG", "1"),
    ("JPEG", "L"),
    ("JPEG", "RGB"),
    ("JPEG", "CMYK"),
    ("BMP", "RGB"),
    ("BMP", "P"),
    ("GIF", "P"),
    ("TIFF", "L"),
    ("TIFF", "RGB"),
    ("TIFF", "CMYK"),
    ("TIFF", "I;16"),
    ("WEBP", "RGB"),
    ("WEBP", "RGBA"),
]


@pytest.mark.parametrize(("fmt", "mode"), FORMATS, ids=[f"{f}-{m}" for f, m in FORMATS])
def test_every_format_and_mode_gives_the_same_digit(tmp_path, upload, reference, h, fmt, mode):
    path = tmp_path / f"digit.{fmt.lower()}"
    _as_mode(upload, mode).save(path, fmt, **({"quality": 92} if fmt in ("JPEG", "WEBP") else {}))
    img = load_image(path)
    assert img.size == (100, 120)
    got = to_mnist(img)
    assert got.shape == (28, 28) and got.dtype == np.uint8
    assert h.iou(got, reference) > 0.75, f"{fmt} {mode} read differently"


def test_bytes_path_string_and_file_object_all_load(tmp_path, upload, h):
    data = h.encode(Image.fromarray(upload), "PNG")
    path = tmp_path / "d.png"
    path.write_bytes(data)
    sizes = {
        load_image(data).size,
        load_image(bytearray(data)).size,
        load_image(str(path)).size,
        load_image(path).size,
        load_image(io.BytesIO(data)).size,
    }
    with open(path, "rb") as fh:
        sizes.add(load_image(fh).size)
    assert sizes == {(100, 120)}


def test_animated_gif_uses_its_first_frame(digit_of, h):
    frames = [
        Image.fromarray(h.on_paper(h.place(h.enlarge(digit_of(d), 50), (64, 64), (7, 20))))
        for d in (1, 0)
    ]
    data = h.encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    got = to_mnist(load_image(data))
    first, second = (to_mnist(np.asarray(f)) for f in frames)
    assert h.iou(got, first) > 0.8 > h.iou(got, second)


XMP_ROTATED = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
)


@pytest.mark.parametrize(
    ("fmt", "where"),
    [("JPEG", "exif"), ("PNG", "exif"), ("WEBP", "exif"), ("TIFF", "exif"), ("PNG", "xmp")],
)
def test_exif_orientation_is_applied(upload, h, fmt, where):
    """Wherever the file keeps its orientation, the image comes back upright."""
    upright = Image.fromarray(upload)  # 100 wide, 120 tall
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # as a phone sensor wrote it
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    if where == "exif":
        tag = {"exif": exif.tobytes()}
    else:  # an XMP packet in a PNG text chunk
        tag = {"pnginfo": PngImagePlugin.PngInfo()}
        tag["pnginfo"].add_itxt("XML:com.adobe.xmp", XMP_ROTATED)
    data = h.encode(stored.convert("RGB"), fmt, quality=95, **tag)
    img = load_image(data)
    assert img.size == upright.size
    assert h.iou(to_mnist(img), to_mnist(upright)) > 0.8


def test_jpeg_decoded_small_keeps_boxes_in_original_pixels(digit_of, h):
    ink = h.place(h.enlarge(digit_of(7), 600), (1500, 2000), (500, 900))
    data = h.encode(Image.fromarray(h.on_paper(ink)).convert("RGB"), "JPEG", quality=85)
    small = load_image(data, max_side=512)
    assert max(small.size) <= 512 and small.info["digitlab_scale"] >= 4
    full = prepare(load_image(data))
    fast = prepare(small)
    assert np.allclose(fast.box, full.box, atol=10)
    x, y, w, hh = fast.box
    assert abs(y - 500) <= 10 and abs(hh - 600) <= 20 and 880 <= x <= 1100
    assert h.iou(fast.image, full.image) > 0.7


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "empty"),
        (b"this is a text file, not a picture", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not an image"),
    ],
    ids=["empty", "text", "png-signature-only"],
)
def test_unreadable_bytes_are_a_user_error(data, says):
    with pytest.raises(DigitlabError, match=says):
        load_image(data)


def test_truncated_png_is_a_user_error(upload, h):
    data = h.encode(Image.fromarray(upload), "PNG")
    with pytest.raises(DigitlabError, match="damaged or truncated"):
        load_image(data[: len(data) // 2])


def test_empty_and_missing_files_are_user_errors(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DigitlabError, match="empty"):
        load_image(empty)
    with pytest.raises(DigitlabError, match="cannot read"):
        load_image(tmp_path / "missing.png")


def _bomb_png(side: int) -> bytes:
    """A real 1-bit PNG of side×side white pixels: ~100 kB that would decode to side² pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" + b"\xff" * ((side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def test_decompression_bomb_is_refused_quickly():
    data = _bomb_png(30000)
    assert len(data) < 200_000
    start = time.perf_counter()
    with pytest.raises(DigitlabError, match="larger than the 50,000,000-pixel limit"):
        load_image(data)
    assert time.perf_counter() - start < 1.0
    with pytest.raises(DigitlabError, match="declares 8000x8000 pixels"):
        load_image(_bomb_png(8000))


def test_pixel_limit_is_per_call(upload, h):
    data = h.encode(Image.fromarray(upload), "PNG")
    with pytest.raises(DigitlabError, match="5,000-pixel limit"):
        load_image(data, max_pixels=5000)
    assert load_image(data).size == (100, 120)


# ------------------------------------------------- reliability: what a file is, what it holds


def test_fifos_devices_folders_and_oversize_files_are_refused_without_reading(tmp_path):
    """Only a regular file is read, and only up to the byte limit: a FIFO would block forever
    and /dev/zero never ends (each call runs in a thread with a deadline, so a regression
    fails here instead of hanging the suite)."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as fh:
        fh.truncate(MAX_IMAGE_BYTES + 1)  # sparse: nothing is written, nothing need be read
    cases = {
        fifo: "is a FIFO (named pipe), not a regular image file",
        "/dev/zero": "is a character device, not a regular image file",
        tmp_path: "is a directory, not a regular image file",
        sparse: f"the image is {MAX_IMAGE_BYTES + 1:,} bytes; at most {MAX_IMAGE_BYTES:,} are read",
    }
    with ThreadPoolExecutor(len(cases)) as pool:
        tries = {src: pool.submit(_error_of, load_image, src) for src in cases}
        for src, says in cases.items():
            assert tries[src].result(timeout=10) == f"{src}: {says}"


def _error_of(fn, *args) -> str:
    try:
        fn(*args)
    except DigitlabError as exc:
        return str(exc)
    return "no error"


def test_a_stream_is_read_only_up_to_the_byte_limit():
    with open("/dev/zero", "rb") as zero, ThreadPoolExecutor(1) as pool:
        said = pool.submit(_error_of, load_image, zero).result(timeout=30)
    assert said == f"/dev/zero: the image is over {MAX_IMAGE_BYTES:,} bytes, the most that is read"


def test_only_the_listed_formats_are_decoded():
    """EPS would run Ghostscript (which can loop forever on a crafted file); it and Pillow's
    rarer decoders are refused as unreadable, whatever is installed."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n{} loop\n"
    tga = io.BytesIO()
    Image.new("L", (10, 10), 255).save(tga, "TGA")
    for data in (eps, tga.getvalue()):
        with pytest.raises(DigitlabError, match="not an image Pillow can read"):
            load_image(data)


def test_a_lab_tiff_is_read_by_its_lightness_on_both_paths(upload, reference, h):
    """Pillow cannot convert LAB to L: load_image hands back the L channel, so prepare and
    the --no-preprocess path (convert("L")) both read it."""
    lab = h.encode(Image.fromarray(upload).convert("RGB").convert("LAB"), "TIFF")
    img = load_image(lab)
    assert img.mode == "L" and img.format == "TIFF"
    assert h.iou(to_mnist(img), reference) > 0.9
    assert img.convert("L").size == (100, 120)


@pytest.mark.parametrize("bad", [[np.nan], [np.inf], [-np.inf], [np.nan, np.inf, -np.inf]])
def test_nan_and_inf_pixels_in_a_float_tiff_do_not_blank_the_digit(upload, reference, h, bad):
    paper = upload.astype(np.float32) / 255
    for i, value in enumerate(bad):
        paper[5 + 40 * i, 7] = value  # on the paper, away from the ink
    img = load_image(h.encode(Image.fromarray(paper, "F"), "TIFF"))
    assert img.mode == "F"
    got = to_mnist(img)
    assert got.max() == 255 and h.iou(got, reference) > 0.9


@pytest.mark.parametrize("bits", [10, 12, 14, 16])
def test_10_to_16_bit_data_in_a_16_bit_png_reads_like_8_bit(upload, reference, h, bits):
    deep = np.rint(upload.astype(np.float64) / 255 * (2**bits - 1)).astype(np.uint16)
    img = load_image(h.encode(Image.fromarray(deep), "PNG"))
    assert img.mode.startswith("I")
    got = to_mnist(img)
    assert got.max() == 255 and h.iou(got, reference) > 0.9


def test_the_ink_box_never_leaves_the_image(digit_of, h):
    """A digit touching the right and bottom edges of an image whose size is no multiple of
    the work-scale factor: the box scaled back must stop at the last pixel."""
    for width, height in [(1543, 401), (1031, 777), (2049, 1031)]:
        ink = h.enlarge(digit_of(7), height - 3)
        canvas = h.place(ink, (height, width), (height - ink.shape[0], width - ink.shape[1]))
        for fmt in ("PNG", "JPEG"):
            img = load_image(h.encode(Image.fromarray(h.on_paper(canvas)), fmt), max_side=512)
            x, y, w, hh = prepare(img).box
            assert min(x, y) >= 0 and x + w <= width and y + hh <= height, (fmt, width)
            assert x + w >= width - 4 and y + hh >= height - 4  # still reaches the edge


def test_clip_box_keeps_a_box_inside_and_at_least_one_pixel():
    assert clip_box((10, 20, 30, 40), (100, 100)) == (10, 20, 30, 40)
    assert clip_box((90, 95, 30, 40), (100, 100)) == (90, 95, 10, 5)
    assert clip_box((-5, -5, 10, 10), (100, 100)) == (0, 0, 5, 5)
    assert clip_box((120, 120, 5, 5), (100, 100)) == (99, 99, 1, 1)
