"""`digitlab report`: one self-contained HTML page with every section, no web address, and
figures that agree with `digitlab evaluate`."""

from __future__ import annotations

import re
import shutil
from html.parser import HTMLParser

import pytest

from digitlab.errors import DigitlabError
from digitlab.viz.report import SECTIONS, write_report

pytestmark = pytest.mark.slow  # trains, drives a browser or reads many numbers


class _Page(HTMLParser):
    """Collects section ids, their headings, and every src/href of the page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self.links: list[str] = []
        self._section: str | None = None
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self._section = a.get("id")
        if tag == "h2" and self._section:
            self._in_h2 = True
        for key in ("src", "href"):
            if key in a:
                self.links.append(a[key])

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.sections[self._section] = self.sections.get(self._section, "") + data


def parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def section_text(html: str, sid: str) -> str:
    return re.search(rf"<section id='{sid}'>(.*?)</section>", html, re.S).group(1)


@pytest.fixture(scope="module")
def report(tiny_run):
    path = write_report(tiny_run)
    return path, path.read_text()


def test_report_is_written_into_the_run_folder_by_default(report, tiny_run):
    path, text = report
    assert path == tiny_run / "report.html"
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")


def test_report_has_every_section_with_its_heading(report):
    page = parse(report[1])
    assert page.sections == SECTIONS
    assert set(SECTIONS) == {
        "recipe", "curves", "confusion", "per-class", "samples", "mistakes",
        "model-summary", "timings", "data",
    }  # fmt: skip


def test_report_refers_to_nothing_outside_itself(report):
    text = report[1]
    for needle in ("http://", "https://", 'src="//', "src='//", "@import", "url("):
        assert needle not in text, needle
    links = parse(text).links
    assert links, "the page has images"
    for link in links:
        assert link.startswith(("data:image/png;base64,", "#")), link[:40]


def test_report_images_are_real_pngs(report):
    import base64
    import io

    from PIL import Image

    uris = [u for u in parse(report[1]).links if u.startswith("data:")]
    # 1 curves + 1 confusion matrix + 9 samples + mistakes
    assert len(uris) >= 11 + 1
    for uri in uris[:3]:
        with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as im:
            assert im.format == "PNG"


def test_recipe_section_shows_the_resolved_recipe(report):
    recipe = section_text(report[1], "recipe")
    assert "softmax" in recipe and "[solver]" in recipe and "momentum" in recipe
    assert "eval_batch_size" in recipe  # a default the tiny recipe did not spell out


def test_confusion_and_per_class_agree_with_evaluate(report, tiny_run):
    from digitlab.evaluate import evaluate_artifact

    r = evaluate_artifact(str(tiny_run), "test")
    errors = round((1 - r["accuracy"]) * r["n"])
    assert f"{errors:,} of 10,000 test digits are misclassified" in section_text(
        report[1], "confusion"
    )
    table = section_text(report[1], "per-class")
    for c in r["per_class"]:
        assert f"<td>{c['recall']:.2%}</td>" in table
        assert f"<td>{c['support']:,}</td>" in table


def test_samples_show_nine_digits_with_true_and_predicted_labels(report):
    samples = section_text(report[1], "samples")
    assert samples.count("<figure") == 9
    assert len(re.findall(r"true <b>\d</b> · pred <b>\d</b>", samples)) == 9


def test_mistakes_are_wrong_and_ordered_by_confidence(report):
    mistakes = section_text(report[1], "mistakes")
    pairs = re.findall(r"true <b>(\d)</b> · pred <b>(\d)</b><br>([\d.]+)%", mistakes)
    assert len(pairs) == 16  # a 100-iteration softmax makes far more than 16 mistakes
    assert all(t != p for t, p, _ in pairs)
    confidences = [float(c) for _, _, c in pairs]
    assert confidences == sorted(confidences, reverse=True)


def test_model_summary_timings_and_digests(report, tiny_run):
    import json

    text = report[1]
    summary = section_text(text, "model-summary")
    assert "Linear" in summary and "7,850" in summary and "15,680" in summary
    timings = section_text(text, "timings")
    assert "100" in timings and "samples/s" in timings
    meta = json.loads((tiny_run / "model.json").read_text())
    data = section_text(text, "data")
    for name, digest in meta["data_digests"].items():
        assert name in data and digest in data


def test_a_run_still_training_gets_a_report_without_model_sections(tiny_run, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(tiny_run / "recipe.toml", live)
    lines = (tiny_run / "metrics.jsonl").read_text().splitlines()[:6]
    (live / "metrics.jsonl").write_text("\n".join(lines) + '\n{"phase": "tr')
    text = write_report(live, tmp_path / "live.html").read_text()
    assert parse(text).sections == SECTIONS
    assert "No model yet" in section_text(text, "confusion")
    assert "in progress" in text


def test_cli_report_writes_the_file_named_by_out(cli, tiny_run, tmp_path):
    r = cli("report", str(tiny_run), "--out", str(tmp_path / "r.html"))
    assert r.returncode == 0, r.stderr.decode()
    assert (tmp_path / "r.html").read_text().count("<section id=") == len(SECTIONS)


@pytest.mark.parametrize("what", ["missing", "no-log", "empty-log"])
def test_report_of_a_folder_that_is_not_a_run_is_a_user_error(cli, tmp_path, what):
    folder = tmp_path / what
    if what != "missing":
        folder.mkdir()
    if what == "empty-log":
        (folder / "metrics.jsonl").write_text("")
    with pytest.raises(DigitlabError):
        write_report(folder)
    r = cli("report", str(folder))
    assert r.returncode == 2 and len(r.stderr.decode().strip().splitlines()) == 1


@pytest.mark.parametrize("broken", ["recipe.toml", "metrics.jsonl"])
def test_a_run_with_a_file_that_is_not_text_is_a_user_error(cli, tiny_run, tmp_path, broken):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / broken).write_bytes(bytes(range(128, 256)) * 4)
    r = cli("report", str(run), "--out", str(tmp_path / "r.html"))
    err = r.stderr.decode().strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and broken in err, err
    assert not (tmp_path / "r.html").exists()
