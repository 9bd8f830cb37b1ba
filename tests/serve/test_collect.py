"""`digitlab serve --collect DIR` on 127.0.0.1: samples land in DIR/<label>/ as PNGs named by
the server, nothing reaches outside DIR, the count is capped and reported, and without
--collect none of it exists. Last, a real Chromium collects samples with the mouse."""

from __future__ import annotations

import base64
import http.client
import io
import json
import math
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

CAP = 5  # --collect-max of the API tests' server
SAMPLE_NAME = re.compile(r"[0-9a-f]{32}\.png")
LABELS = [str(d) for d in range(10)] + ["none"]


@pytest.fixture(scope="module")
def collecting(served_model, web, tmp_path_factory):
    """A server with --collect into ``root/mine`` (cap 5, 1 MiB uploads); ``root`` holds only
    that folder and the log, so anything written outside DIR shows up there."""
    root = tmp_path_factory.mktemp("collect-api")
    folder = root / "mine"
    args = ["--model", str(served_model), "--max-upload-mb", "1"]
    args += ["--collect", str(folder), "--collect-max", str(CAP)]
    server = web.start_server(args, root / "server.log")
    yield SimpleNamespace(server=server, folder=folder, root=root)
    web.stop_server(server)


@pytest.fixture
def collect(collecting):
    """The collect server with an empty DIR (the server counts what is on disk)."""
    for entry in collecting.folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    yield collecting
    assert sorted(p.name for p in collecting.root.iterdir()) == ["mine", "server.log"]


def drawing(seed: int, size: tuple[int, int] = (280, 280)) -> Image.Image:
    """A pen stroke in black on a white canvas, different for every seed."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, "white")
    w, h = size
    points = [(float(x * w), float(y * h)) for x, y in rng.uniform(0.2, 0.8, (5, 2))]
    ImageDraw.Draw(img).line(points, fill="black", width=max(2, h // 14), joint="curve")
    return img


def encoded(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def save(collect, label: str, image: bytes, web) -> tuple[int, dict]:
    body, ctype = web.multipart([("image", "pad.png", image, "image/png")])
    url = f"{collect.server.url}/v1/collect?label={label}"
    status, raw, headers = web.request(url, body, {"Content-Type": ctype})
    assert headers["content-type"] == "application/json"
    return status, json.loads(raw)


def samples(folder: Path) -> dict[str, list[Path]]:
    """Every file under DIR by label folder; fails on anything not named as the server names."""
    found: dict[str, list[Path]] = {}
    for path in sorted(p for p in folder.rglob("*") if not p.is_dir()):
        rel = path.relative_to(folder)
        assert len(rel.parts) == 2 and rel.parts[0] in LABELS, rel
        assert SAMPLE_NAME.fullmatch(rel.name), rel
        found.setdefault(rel.parts[0], []).append(path)
    return found


def ink_pixels(path: Path) -> int:
    return int((np.asarray(Image.open(path).convert("L")) < 128).sum())


# ----------------------------------------------------------------------------- saving


def test_a_sample_lands_in_its_digit_folder_as_the_png_drawn(collect, web):
    drawn = drawing(7)
    status, body = save(collect, "7", encoded(drawn), web)
    assert status == 201
    assert body["label"] == "7" and body["duplicate"] is False
    (path,) = samples(collect.folder)["7"]
    assert body["file"] == f"7/{path.name}"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "L"
        assert img.size == (280, 280)  # at its drawn size, not 28x28
        assert np.array_equal(np.asarray(img), np.asarray(drawn.convert("L")))
    assert ink_pixels(path) > 500


def test_json_data_urls_and_not_a_digit_samples_are_saved_too(collect, web):
    b64 = base64.b64encode(encoded(drawing(1))).decode()
    url = f"{collect.server.url}/v1/collect?label=none"
    payload = json.dumps({"image": f"data:image/png;base64,{b64}"}).encode()
    status, raw, _ = web.request(url, payload, {"Content-Type": "application/json"})
    assert status == 201, raw
    transparent = Image.new("RGBA", (280, 280), (0, 0, 0, 0))  # a pad that never filled white
    ImageDraw.Draw(transparent).line([(60, 60), (220, 200)], fill=(0, 0, 0, 255), width=20)
    status, _ = save(collect, "4", encoded(transparent), web)
    assert status == 201
    found = samples(collect.folder)
    assert len(found["none"]) == 1 and ink_pixels(found["none"][0]) > 500
    (four,) = found["4"]
    gray = np.asarray(Image.open(four))
    assert gray[0, 0] == 255 and 500 < (gray < 128).sum() < 20_000  # ink on white paper


def test_saving_the_same_drawing_twice_keeps_one_file(collect, web):
    image = encoded(drawing(2))
    first, body1 = save(collect, "2", image, web)
    second, body2 = save(collect, "2", image, web)
    assert (first, second) == (201, 200)
    assert body2["duplicate"] is True and body2["file"] == body1["file"]
    assert len(samples(collect.folder)["2"]) == 1
    assert body2["counts"]["2"] == 1


def test_counts_report_every_label_and_the_finetune_command(collect, web):
    for seed, label in enumerate(["3", "3", "8", "none"]):
        assert save(collect, label, encoded(drawing(10 + seed)), web)[0] == 201
    (collect.folder / "5").mkdir()
    Image.new("L", (28, 28)).save(collect.folder / "5" / "from-elsewhere.jpg")  # counted too
    status, raw, _ = collect.server.get("/v1/collect")
    body = json.loads(raw)
    assert status == 200
    expected = {label: 0 for label in LABELS} | {"3": 2, "8": 1, "none": 1, "5": 1}
    assert body["counts"] == expected
    assert body["total"] == 5 and body["max_files"] == CAP
    assert body["finetune"] == f"digitlab train finetune --init bundled --data {collect.folder}"


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "label", ["10", "-1", "seven", "NONE", "", "../7", "7/..", "..%2F..%2Fescape", "7%00", "%207"]
)
def test_a_label_outside_0_to_9_and_none_is_422(collect, web, label):
    status, body = save(collect, label, encoded(drawing(3)), web)
    assert status == 422
    assert list(body) == ["error"] and "label" in body["error"]
    assert samples(collect.folder) == {}


def test_no_field_of_a_request_names_a_file_or_leaves_dir(collect, web):
    image = encoded(drawing(4))
    body, ctype = web.multipart([("image", "../../../escape.png", image, "image/png")])
    url = f"{collect.server.url}/v1/collect?label=6&file=../../escape.png&name=/tmp/escape"
    status, raw, _ = web.request(url, body, {"Content-Type": ctype})
    assert status == 201, raw
    payload = {"image": base64.b64encode(encoded(drawing(5))).decode(), "label": "../../x"}
    url = f"{collect.server.url}/v1/collect?label=6"
    headers = {"Content-Type": "application/json", "X-Filename": "../escape.png"}
    status, raw, _ = web.request(url, json.dumps(payload).encode(), headers)
    assert status == 201, raw
    assert [p.parent.name for p in sum(samples(collect.folder).values(), [])] == ["6", "6"]
    assert not list(collect.root.parent.glob("**/escape*"))


def test_a_link_planted_as_a_label_folder_is_not_followed(collect, web, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (collect.folder / "4").symlink_to(outside, target_is_directory=True)
    status, body = save(collect, "4", encoded(drawing(6)), web)
    assert status == 409 and "not a folder inside" in body["error"]
    assert list(outside.iterdir()) == []


def test_the_count_cap_refuses_more_samples_with_409(collect, web):
    (collect.folder / "1").mkdir()
    Image.new("L", (28, 28)).save(collect.folder / "1" / "mine.png")  # one already there
    statuses = [save(collect, "9", encoded(drawing(20 + i)), web)[0] for i in range(CAP - 1)]
    assert statuses == [201] * (CAP - 1)
    status, body = save(collect, "9", encoded(drawing(99)), web)
    assert status == 409 and f"--collect-max {CAP}" in body["error"]
    assert len([p for p in collect.folder.rglob("*") if p.is_file()]) == CAP


def test_concurrent_saves_never_pass_the_cap(collect, web):
    images = [encoded(drawing(40 + i)) for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda im: save(collect, "0", im, web)[0], images))
    assert sorted(statuses) == [201] * CAP + [409] * (16 - CAP)
    assert len(samples(collect.folder)["0"]) == CAP


def huge_canvas() -> bytes:
    return encoded(drawing(7, (600, 600)))


@pytest.mark.parametrize(
    "case,status",
    [
        ("larger than a canvas", 413),
        ("a long strip", 413),
        ("36 megapixels", 413),
        ("blank", 422),
        ("not an image", 422),
        ("no label", 422),
        ("text/plain", 415),
    ],
)
def test_bad_samples_get_a_json_4xx_and_write_nothing(collect, web, case, status):
    strip = encoded(drawing(8, (2000, 40)))
    cases = {
        "larger than a canvas": ("label=1", huge_canvas(), "image/png"),
        "a long strip": ("label=1", strip, "image/png"),
        "36 megapixels": ("label=1", encoded(Image.new("1", (6000, 6000))), "image/png"),
        "blank": ("label=1", encoded(Image.new("RGB", (280, 280), "white")), "image/png"),
        "not an image": ("label=1", b"GIF89a but not really", "image/gif"),
        "no label": ("", encoded(drawing(9)), "image/png"),
        "text/plain": ("label=1", b"seven", "text/plain"),
    }
    query, body, ctype = cases[case]
    url = f"{collect.server.url}/v1/collect?{query}"
    got, raw, headers = web.request(url, body, {"Content-Type": ctype})
    assert got == status, raw
    assert headers["content-type"] == "application/json"
    assert list(json.loads(raw)) == ["error"]
    assert samples(collect.folder) == {}


def test_a_body_over_the_upload_limit_is_refused_before_it_is_read(collect):
    conn = http.client.HTTPConnection("127.0.0.1", collect.server.port, timeout=10)
    conn.putrequest("POST", "/v1/collect?label=1")
    conn.putheader("Content-Type", "image/png")
    conn.putheader("Content-Length", str(1024 * 1024 + 1))
    conn.endheaders()  # the body never comes: the answer must not wait for it
    response = conn.getresponse()
    assert response.status == 413
    assert "larger than" in json.loads(response.read())["error"]
    conn.close()
    assert samples(collect.folder) == {}


# ----------------------------------------------------------------------------- off by default


def test_without_collect_there_is_no_collect_endpoint_and_the_page_is_unchanged(server, web):
    from digitlab.serve.app import STATIC

    status, raw, _ = server.get("/v1/collect")
    assert status == 404 and "no such endpoint" in json.loads(raw)["error"]
    url = f"{server.url}/v1/collect?label=7"
    status, raw, _ = web.request(url, encoded(drawing(0)), {"Content-Type": "image/png"})
    assert status == 404 and list(json.loads(raw)) == ["error"]
    assert server.get("/")[1] == (STATIC / "index.html").read_bytes()
    assert "/v1/collect" not in json.loads(server.get("/openapi.json")[1])["paths"]


def test_the_collect_page_and_openapi_offer_collect_mode(collect):
    page = collect.server.get("/")[1].decode()
    assert "<body data-collect>" in page and 'value="collect"' in page
    assert "/v1/collect" in json.loads(collect.server.get("/openapi.json")[1])["paths"]


def test_a_collect_folder_that_cannot_be_made_fails_in_one_line(served_model, cli, tmp_path):
    (tmp_path / "a-file").write_text("")
    bad = tmp_path / "a-file" / "mine"
    done = cli("serve", "--model", str(served_model), "--port", "0", "--collect", str(bad))
    err = done.stderr.decode()
    assert done.returncode == 2 and err.count("\n") == 1
    assert f"--collect {bad}: cannot create it" in err


# ----------------------------------------------------------------------------- in a browser

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_ENV = "DIGITLAB_SCREENSHOTS"  # a folder (docs/) to keep the screenshot in

THREE = [
    [(0.3, 0.2), (0.55, 0.14), (0.68, 0.28), (0.48, 0.47), (0.7, 0.62), (0.58, 0.83), (0.3, 0.8)]
]


def eight(width: float) -> list[list[tuple[float, float]]]:
    """A figure of eight in one stroke (a Lissajous curve), ``width`` of the pad wide."""
    steps = [2 * math.pi * t / 40 for t in range(41)]
    return [[(0.5 + width * math.sin(2 * t), 0.5 - 0.34 * math.cos(t)) for t in steps]]


@pytest.fixture(scope="module")
def browser_page(served_model, web, tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (apt-get install chromium; .ci/run installs it)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("collect-page")
    folder = root / "my-digits"  # given relative to the server's folder, as a user types it
    args = ["--model", str(served_model), "--collect", "my-digits"]
    server = web.start_server(args, root / "server.log", cwd=root)
    try:
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--headless", "--no-sandbox", "--disable-gpu"],
            )
            page = browser.new_page(viewport={"width": 900, "height": 640})
            outside, errors = [], []
            page.on("request", lambda r: outside.append(r.url) if "127.0.0.1" not in r.url else 0)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url + "/")
            yield SimpleNamespace(page=page, folder=folder)
            assert not outside, f"the page fetched from elsewhere: {outside}"
            assert not errors, f"JavaScript errors: {errors}"
            browser.close()
    finally:
        web.stop_server(server)


def draw(page, strokes) -> None:
    page.locator("#pad").scroll_into_view_if_needed()  # saving scrolls the page down
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=4)
        page.mouse.up()


def pad_ink(page) -> int:
    return page.locator("#pad").evaluate(
        "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data"
        ".filter((v, i) => i % 4 == 0 && v < 128).length"
    )


@pytest.mark.slow
def test_collect_mode_saves_drawn_samples_per_digit_and_shows_the_counts(browser_page, tmp_path):
    from playwright.sync_api import expect

    page, folder = browser_page.page, browser_page.folder
    assert page.locator("#collect").is_hidden()
    page.locator('input[name="mode"][value="collect"]').check()
    expect(page.locator("#collect")).to_be_visible()
    expect(page.locator("#labels .tile")).to_have_count(11)
    expect(page.locator("#collect-total")).to_have_text("0 of at most 10,000 samples")
    save = page.locator("#save")
    assert save.is_disabled()  # nothing chosen, nothing drawn

    page.locator('#labels .tile[data-label="3"]').click()
    draw(page, THREE)
    expect(save).to_have_text("Save as 3")
    save.click()
    expect(page.locator("#count-3")).to_have_text("1")
    assert pad_ink(page) == 0  # the pad is cleared for the next sample

    page.keyboard.press("8")  # keys choose the digit in collect mode
    expect(save).to_have_text("Save as 8")
    draw(page, eight(0.2))
    save.click()
    expect(page.locator("#count-8")).to_have_text("1")
    draw(page, eight(0.15))
    # the drawing is read first, as a user sees it: a save within the 120 ms the pad waits
    # before reading would race that read, which clears the status line on an empty pad
    expect(page.locator("#answer")).not_to_have_text("–", timeout=10_000)
    page.wait_for_timeout(500)  # pointer events arrive with the frames: let the last one land
    page.keyboard.press("s")  # and S saves
    try:  # the save (canvas.toBlob, then POST) reached the server 1.1 s after S on an idle
        # machine, the POST itself 30 ms; in a loaded slow tier once not within 5 s
        expect(page.locator("#count-8")).to_have_text("2", timeout=20_000)
    except AssertionError as exc:  # say what the page held
        state = page.evaluate(
            "() => [document.activeElement.outerHTML.slice(0, 80),"
            " document.getElementById('save').outerHTML,"
            " document.getElementById('status').textContent,"
            " document.getElementById('answer').textContent]"
        )
        raise AssertionError(f"S did not save; focus, button, status, answer: {state}") from exc
    expect(page.locator("#status")).to_have_text("Saved as 8: 2 so far.")
    expect(page.locator("#collect-total")).to_have_text("3 of at most 10,000 samples")
    command = "digitlab train finetune --init bundled --data my-digits"
    expect(page.locator("#finetune")).to_have_text(command)

    found = samples(folder)
    assert sorted(found) == ["3", "8"]
    assert len(found["3"]) == 1 and len(found["8"]) == 2
    for path in found["3"] + found["8"]:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size == (280, 280)
        assert ink_pixels(path) > 1000
    assert [page.locator(f"#count-{label}").inner_text() for label in LABELS] == [
        "0", "0", "0", "1", "0", "0", "0", "0", "2", "0", "0"
    ]  # fmt: skip

    draw(page, eight(0.18))  # the next sample, for the picture of the page
    expect(page.locator("#answer")).to_have_text("8", timeout=10_000)
    shot = tmp_path / "serve-collect-screenshot.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, Path(os.environ[SCREENSHOT_ENV]) / shot.name)
