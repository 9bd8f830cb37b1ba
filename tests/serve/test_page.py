"""The drawing page in a real browser: Debian's Chromium, driven by Playwright, draws digits
with the mouse on the canvas of a real `digitlab serve` and reads the answer off the page."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_ENV = "DIGITLAB_SCREENSHOTS"  # a folder (docs/) to keep the screenshots in

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="no /usr/bin/chromium (apt-get install chromium; .ci/run installs it)",
    ),
]

# Strokes in canvas fractions (0..1 of width and height), as a person would draw them.
ONE = [[(0.47, 0.15), (0.5, 0.5), (0.52, 0.85)]]
SEVEN = [[(0.25, 0.18), (0.75, 0.18), (0.6, 0.45), (0.45, 0.85)]]
ZERO = [
    [
        (0.5 + 0.22 * math.sin(t / 24 * 2 * math.pi), 0.5 - 0.33 * math.cos(t / 24 * 2 * math.pi))
        for t in range(25)
    ]
]


def shifted(strokes, dx: float, sx: float = 0.5):
    """Strokes squeezed to ``sx`` of the width and moved right by ``dx`` (number mode)."""
    return [[(dx + x * sx, y) for x, y in stroke] for stroke in strokes]


@pytest.fixture(scope="module")
def page(server):
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 900, "height": 640})
        outside = []
        page.on("request", lambda r: outside.append(r.url) if "127.0.0.1" not in r.url else None)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        yield page
        assert not outside, f"the page fetched from elsewhere: {outside}"
        assert not errors, f"JavaScript errors: {errors}"
        browser.close()


def draw(page, strokes) -> None:
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=6)
        page.mouse.up()


def screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(path, Path(os.environ[SCREENSHOT_ENV]) / path.name)


def answer_becomes(page, text: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#answer")).to_have_text(text, timeout=10_000)


@pytest.mark.parametrize("digit,strokes", [("1", ONE), ("7", SEVEN), ("0", ZERO)])
def test_drawn_digit_is_read_with_bars_and_the_28x28_input(page, digit, strokes, tmp_path):
    page.keyboard.press("Delete")
    answer_becomes(page, "–")
    draw(page, strokes)
    answer_becomes(page, digit)
    best = page.locator("#bars li.best .label")
    assert best.inner_text() == digit
    assert page.locator("#bars li").count() == 10
    seen = page.locator("#seen")
    assert seen.is_visible()
    assert seen.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [28, 28]
    if digit == "7":
        screenshot(page, tmp_path / "serve-screenshot.png")


def test_undo_and_clear_from_buttons_and_keys(page):
    page.keyboard.press("Delete")
    draw(page, SEVEN)
    answer_becomes(page, "7")
    draw(page, [[(0.3, 0.55), (0.7, 0.55)]])  # a crossbar; undo must remove just that
    page.wait_for_timeout(400)
    page.locator("#undo").focus()
    page.keyboard.press("Enter")
    answer_becomes(page, "7")
    blank = page.locator("#pad").evaluate(
        "c => c.getContext('2d').getImageData(0, c.height * 0.55, c.width, 1).data"
        ".filter((v, i) => i % 4 == 0 && v < 128).length"
    )
    assert blank < 40  # the crossbar's row holds only the 7's diagonal
    page.locator("#clear").click()
    answer_becomes(page, "–")


def test_number_mode_reads_a_two_digit_number_and_saves_a_screenshot(page, tmp_path):
    page.keyboard.press("Delete")
    page.keyboard.press("n")  # number mode from the keyboard
    assert page.locator('input[value="number"]').is_checked()
    box = page.locator("#pad").bounding_box()
    assert box["width"] > 1.9 * box["height"]
    draw(page, shifted(ONE, 0.0) + shifted(SEVEN, 0.5))
    answer_becomes(page, "17")
    assert page.locator("#pieces li").count() == 2
    screenshot(page, tmp_path / "serve-screenshot-number.png")
    page.keyboard.press("n")
    assert page.locator('input[value="digit"]').is_checked()


def test_upload_an_image_file(page, web, mnist, tmp_path):
    test = mnist["test"]
    label = int(test.labels[0])
    path = tmp_path / "upload.png"
    path.write_bytes(web.png(web.paper_digit(test.images[0])))
    page.keyboard.press("Delete")
    page.locator("#file").set_input_files(str(path))
    answer_becomes(page, str(label))


def test_page_fits_a_phone_screen(page):
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        page.wait_for_timeout(100)
        overflow = page.evaluate("document.documentElement.scrollWidth")
        box = page.locator("#pad").bounding_box()
        assert overflow <= 390
        assert 250 <= box["width"] <= 390
        for control in ("#undo", "#clear", ".upload"):
            assert page.locator(control).bounding_box()["height"] >= 44  # a finger's target
    finally:
        page.set_viewport_size({"width": 900, "height": 640})
