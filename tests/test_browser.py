"""The pick browser: the page's data and safety in Python, its counts in a real headless Chromium."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from topaz_lightning.browser import (
    PAGE_SIZE,
    expected_particles,
    pick_counts,
    thumbnail,
    write_pick_browser,
)
from topaz_lightning.errors import InputError, OutputExistsError
from topaz_lightning.metrics import match_picks

CHROMIUM = Path("/usr/bin/chromium")
#: Debian's Chromium, headless, without anything that reaches the network
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE_NAMES = ["<img src=x onerror=alert(1)>", "</script><script>alert(2)</script>", "a&amp;b"]


def _scene(names, seed=0, picks_per=40, shape=(60, 80), truth=True):
    """Small micrographs, picks with scores already rounded as the page rounds them, and truth
    near some picks (so matched, false and missed all occur)."""
    rng = np.random.default_rng(seed)
    images = {n: rng.normal(size=shape).astype(np.float32) for n in names}
    frames = []
    for n in names:
        frames.append(
            pd.DataFrame(
                {
                    "micrograph": n,
                    "x": rng.uniform(0, shape[1] - 1, picks_per),
                    "y": rng.uniform(0, shape[0] - 1, picks_per),
                    "score": np.round(rng.normal(size=picks_per), 4),
                }
            )
        )
    picks = pd.concat(frames, ignore_index=True)
    if not truth:
        return picks, images, None
    near = picks.sample(frac=0.4, random_state=seed)[["micrograph", "x", "y"]].copy()
    near[["x", "y"]] += rng.normal(scale=2.0, size=(len(near), 2))
    near["x"] = near["x"].clip(0, shape[1] - 1)
    near["y"] = near["y"].clip(0, shape[0] - 1)
    far = pd.DataFrame(
        {
            "micrograph": rng.choice(names, size=len(names) * 5),
            "x": rng.uniform(0, shape[1], len(names) * 5),
            "y": rng.uniform(0, shape[0], len(names) * 5),
        }
    )
    return picks, images, pd.concat([near, far], ignore_index=True)


def _reference(picks, truth, threshold, top_k, distance):
    """Matched / false / missed in all, matching only the picks shown (an independent check of
    the prefix property the page relies on)."""
    matched = false = missed = 0
    for name, t in truth.groupby("micrograph"):
        p = picks[(picks["micrograph"] == name) & (picks["score"] >= threshold)]
        p = p.iloc[np.argsort(-p["score"].to_numpy(), kind="stable")]
        if top_k:
            p = p.iloc[:top_k]
        m = match_picks(
            p[["x", "y"]].to_numpy(),
            t[["x", "y"]].to_numpy(),
            distance,
            scores=p["score"].to_numpy(),
            method="score",
        )
        matched += int((m >= 0).sum())
        false += int((m < 0).sum())
        missed += len(t) - int((m >= 0).sum())
    return matched, false, missed


# --------------------------------------------------------------------------- Python side


def test_greedy_matching_of_the_picks_above_a_threshold_is_the_full_one_restricted():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n, k = rng.integers(5, 60), rng.integers(5, 60)
        xy = rng.uniform(0, 50, (n, 2))
        truth = rng.uniform(0, 50, (k, 2))
        scores = np.round(rng.normal(size=n), 1)  # ties included
        order = np.argsort(-scores, kind="stable")
        xy, scores = xy[order], scores[order]
        full = match_picks(xy, truth, 6.0, scores=scores, method="score")
        for top in range(n + 1):
            part = match_picks(xy[:top], truth, 6.0, scores=scores[:top], method="score")
            np.testing.assert_array_equal(part, full[:top])


def test_pick_counts_threshold_and_top_k():
    picks = pd.DataFrame(
        {
            "micrograph": ["a", "a", "a", "b", "c"],
            "x": [1.0, 2, 3, 4, 5],
            "y": [1.0, 2, 3, 4, 5],
            "score": [0.5, 0.2, -1.0, 0.19999, 3.0],
        }
    )
    assert pick_counts(picks).to_dict() == {"a": 3, "b": 1, "c": 1}
    assert pick_counts(picks, 0.2).to_dict() == {"a": 2, "b": 1, "c": 1}  # 0.19999 rounds to 0.2
    assert pick_counts(picks, 0.3).to_dict() == {"a": 1, "b": 0, "c": 1}
    assert pick_counts(picks, -5, top_k=2).to_dict() == {"a": 2, "b": 1, "c": 1}


def test_thumbnail_block_means_and_stretch():
    image = np.arange(1000 * 600, dtype=np.float32).reshape(600, 1000)
    picture, factor = thumbnail(image)
    assert factor == 2 and picture.shape == (300, 500) and picture.dtype == np.uint8
    assert picture.min() == 0 and picture.max() == 255
    # 1 % of the pixels at each end are clipped: the first and last rows are saturated
    assert (picture[:2] == 0).all() and (picture[-2:] == 255).all()
    picture, factor = thumbnail(np.ones((10, 13), np.float32), downsample=3)
    assert factor == 3 and picture.shape == (3, 4)
    with pytest.raises(InputError, match="downsample_for_thumbnail"):
        thumbnail(image, downsample=0)


def test_expected_particles_inverts_the_prior():
    from topaz_lightning.data.prior import pi_from_particles_per_micrograph

    pi = pi_from_particles_per_micrograph(650, (1024, 1024), 3)
    assert expected_particles(pi, (4096, 4096), 4, 3) == pytest.approx(650)


def test_page_is_self_contained_and_escapes_names(tmp_path):
    picks, images, truth = _scene(["plain", *HOSTILE_NAMES])
    out = write_pick_browser(picks, images, tmp_path / "p.html", 10.0, 12, truth=truth)
    text = out.read_text()
    # no name leaves the JSON block unescaped: the only tags are the page's own
    for name in HOSTILE_NAMES:
        assert name not in text
    assert text.count("</script>") == 2 and text.count("<script") == 2
    assert "\\u003cimg src=x onerror=alert(1)\\u003e" in text
    # nothing is fetched: no external URL in a src/href, a CSP that forbids any
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", text)
    assert "default-src 'none'" in text
    assert text.count("data:image/jpeg;base64,") == len(images)
    # a title is text too, and never taken for a marker of the page's template
    title = "</title><script>alert(3)</script> __DATA__ __SCRIPT__"
    out = write_pick_browser(picks, images, tmp_path / "t.html", 10.0, title=title)
    text = out.read_text()
    assert "&lt;/title&gt;&lt;script&gt;alert(3)&lt;/script&gt; __DATA__ __SCRIPT__" in text
    assert text.count("<script") == 2


def test_refuses_overwrite_and_bad_input(tmp_path):
    picks, images, _ = _scene(["m1", "m2"], truth=False)
    out = tmp_path / "p.html"
    write_pick_browser(picks, images, out, 10.0)
    before = out.read_text()
    with pytest.raises(OutputExistsError):
        write_pick_browser(picks, images, out, 10.0)
    assert out.read_text() == before
    write_pick_browser(picks.iloc[:3], images, out, 10.0, overwrite=True)
    assert out.read_text() != before
    assert [p.name for p in tmp_path.iterdir()] == ["p.html"]  # no temporary file left
    with pytest.raises(InputError, match="names do not match"):
        write_pick_browser(picks.assign(micrograph="other"), images, tmp_path / "q.html", 10.0)
    with pytest.raises(InputError, match="score"):
        write_pick_browser(picks.drop(columns="score"), images, tmp_path / "q.html", 10.0)
    with pytest.raises(InputError, match="particle_diameter_px"):
        write_pick_browser(picks, images, tmp_path / "q.html", 0.0)
    with pytest.raises(InputError, match="expected_per_micrograph.*'m2'"):
        write_pick_browser(picks, images, tmp_path / "q.html", 10.0, {"m1": 5, "m2": float("nan")})
    bad = picks.copy()
    bad.loc[4, "x"] = np.nan
    with pytest.raises(InputError, match="row 4"):
        write_pick_browser(bad, images, tmp_path / "q.html", 10.0)
    assert not (tmp_path / "q.html").exists()
    # unreadable micrographs: left out and reported; all unreadable: the error
    (tmp_path / "bad.mrc").write_bytes(b"\x00" * 100)
    skipped = []
    write_pick_browser(
        picks, {**images, "bad": tmp_path / "bad.mrc"}, tmp_path / "r.html", 10.0, skipped=skipped
    )
    assert [name for name, _ in skipped] == ["bad"] and "bad.mrc" in skipped[0][1]
    with pytest.raises(InputError, match="bad.mrc"):
        write_pick_browser(
            picks.assign(micrograph="bad"), {"bad": tmp_path / "bad.mrc"}, tmp_path / "s.html", 10.0
        )


# --------------------------------------------------------------------------- in Chromium


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium; .ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _open(chromium, path: Path):
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    problems = []
    page.on("pageerror", lambda err: problems.append(f"script error: {err}"))
    page.on(
        "dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss())
    )
    page.on(
        "request",
        lambda req: None if req.url.startswith(("file:", "data:")) else problems.append(req.url),
    )
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    return page, problems


def _shown(page, n_cards: int, first: int = 0) -> dict[int, int]:
    return {
        i: int(page.get_attribute(f"#count-{i}", "data-count"))
        for i in range(first, first + n_cards)
    }


def test_slider_and_top_k_counts_match_python(chromium, tmp_path):
    names = [f"mic{i:02d}" for i in range(PAGE_SIZE + 6)] + HOSTILE_NAMES
    picks, images, truth = _scene(names, seed=1)
    distance = 5.0
    out = write_pick_browser(
        picks,
        images,
        tmp_path / "p.html",
        10.0,
        expected_per_micrograph=12,
        truth=truth,
        match_distance_px=distance,
    )
    page, problems = _open(chromium, out)
    total = page.locator("#total-picks")

    def check(threshold: float, top_k: int | None):
        expected = pick_counts(picks, threshold, top_k)
        assert int(total.get_attribute("data-count")) == expected.sum()
        on_page = _shown(page, PAGE_SIZE)
        assert on_page == {i: expected[names[i]] for i in on_page}
        truth_el = page.locator("#total-truth")
        got = tuple(
            int(truth_el.get_attribute(f"data-{k}")) for k in ("matched", "false", "missed")
        )
        assert got == _reference(picks, truth, threshold, top_k, distance)

    # the starting threshold keeps the expected count (12 per micrograph) in all
    start = float(page.locator("body").get_attribute("data-threshold"))
    assert (
        pick_counts(picks, start).sum() >= 12 * len(names) > pick_counts(picks, start + 1e-3).sum()
    )
    check(start, None)
    assert min(_reference(picks, truth, start, None, distance)) > 0  # all three kinds occur
    # move the slider as a user would: focus it and press the arrow keys
    slider = page.locator("#threshold")
    slider.focus()
    for _ in range(40):
        slider.press("ArrowRight")
    threshold = float(slider.input_value())
    assert threshold > start
    assert float(page.locator("body").get_attribute("data-threshold")) == threshold
    check(threshold, None)
    for _ in range(25):
        slider.press("ArrowLeft")
    threshold = float(slider.input_value())
    check(threshold, None)
    # a typed threshold and a top-k
    page.fill("#threshold-value", "-0.5")
    check(-0.5, None)
    page.fill("#topk", "7")
    check(-0.5, 7)
    page.fill("#topk", "")
    page.click("#btn-all")
    check(float(page.locator("body").get_attribute("data-threshold")), None)
    assert int(total.get_attribute("data-count")) == len(picks)
    # page 2 holds the rest, with the hostile names shown as text
    page.fill("#threshold-value", "0.25")
    page.click("#next")
    rest = len(names) - PAGE_SIZE
    on_page = _shown(page, rest, first=PAGE_SIZE)
    counts = pick_counts(picks, 0.25)
    assert on_page == {i: counts[names[i]] for i in on_page}
    shown_names = page.locator(".card .name").all_inner_texts()
    assert shown_names == names[PAGE_SIZE:]
    assert page.locator("#grid img").count() == 0  # names never became elements
    # ordered by count (at the current setting) and filtered by name
    page.select_option("#sort", "picks-desc")
    listed = [
        int(c)
        for c in page.locator(".card .count").evaluate_all(
            "(els) => els.map((e) => e.dataset.count)"
        )
    ]
    assert listed == sorted(counts.to_numpy(), reverse=True)[:PAGE_SIZE]
    page.select_option("#sort", "missed-desc")
    first = int(page.locator(".card").first.get_attribute("data-index"))
    missed = {
        n: _reference(picks, truth[truth["micrograph"] == n], 0.25, None, distance)[2]
        for n in names
    }
    assert missed[names[first]] == max(missed.values())
    page.fill("#filter", "mic1")
    in_order = [n for n in names if "mic1" in n]
    assert sorted(page.locator(".card .name").all_inner_texts()) == in_order
    page.select_option("#sort", "given")
    assert page.locator(".card .name").all_inner_texts() == in_order
    assert "of 10 listed, 33 in all" in page.inner_text("#page-label")
    assert problems == []


#: pixels of the first thumbnail whose colour is far from grey (circles; the thumbnail is grey)
COLOURED_PIXELS = """() => {
  const c = document.querySelector("#grid canvas");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] - d[i + 2] > 80 && d[i + 1] - d[i + 2] > 60) n++;
  return n;
}"""


def _drawn(page) -> int:
    """Coloured pixels once the current setting is drawn."""
    page.wait_for_function(
        "() => document.body.dataset.drawn === "
        "document.body.dataset.threshold + '/' + document.body.dataset.topk"
    )
    # every thumbnail of the page decoded (each draws itself when it is)
    page.wait_for_function(
        "() => document.body.dataset.loaded === "
        "String(document.querySelectorAll('#grid canvas').length)"
    )
    return page.evaluate(COLOURED_PIXELS)


def test_page_without_truth_or_expected_count(chromium, tmp_path):
    picks, images, _ = _scene(["a", "b"], truth=False, shape=(120, 160))
    out = write_pick_browser(picks, images, tmp_path / "p.html", 10.0, threshold=0.3)
    page, problems = _open(chromium, out)
    assert float(page.locator("#threshold-value").input_value()) == 0.3
    assert int(page.get_attribute("#total-picks", "data-count")) == pick_counts(picks, 0.3).sum()
    # the circles are drawn, in the pick colour, and vanish above the highest score
    page.click("#btn-all")
    assert _drawn(page) > 100
    page.fill("#threshold-value", str(picks["score"].max() + 1))
    assert int(page.get_attribute("#total-picks", "data-count")) == 0
    assert _drawn(page) == 0
    assert page.locator("#pr-figure").is_hidden()
    assert page.locator("#total-expected").inner_text() == ""
    assert page.locator("#btn-expected").is_disabled()
    assert problems == []


# --------------------------------------------------------------------------- tzl-browse


def test_cli_writes_the_page_from_files(empiar10017_dir, tmp_path, monkeypatch, capsys):
    from topaz_lightning.cli.browse import main
    from topaz_lightning.io.coordinates import read_coordinates, write_coordinates

    # picks: the true particles of two micrographs with made-up scores (picks frame = JPEG pixels)
    truth = read_coordinates(empiar10017_dir / "coords")
    two = sorted(truth["micrograph"].unique())[:2]
    images = tmp_path / "images"
    images.mkdir()
    for name in two:
        (images / f"{name}.jpg").symlink_to(empiar10017_dir / "images" / f"{name}.jpg")
    picks = truth[truth["micrograph"].isin(two)].copy()
    picks["score"] = np.linspace(-2, 2, len(picks))
    write_coordinates(picks, tmp_path / "picks.tsv")
    out = tmp_path / "picks.html"
    monkeypatch.chdir(tmp_path)
    args = [
        "tzl-browse",
        f"picks={tmp_path / 'picks.tsv'}",
        f"micrographs={images}",
        f"truth={empiar10017_dir / 'coords'}",
        "particle_diameter_px=108",
        f"output={out}",
    ]
    monkeypatch.setattr(sys, "argv", args)
    main()
    text = out.read_text()
    assert text.count("data:image/jpeg;base64,") == 2
    assert f"wrote {out}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "picks.html", "picks.tsv"]
    # refused without overwrite, exit 2 and one line
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    assert "already exists" in capsys.readouterr().err
    # the diameter is required without a model
    monkeypatch.setattr(sys, "argv", [a for a in args if "diameter" not in a] + ["overwrite=true"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 2
    assert "particle_diameter_px" in capsys.readouterr().err
    # an unreadable micrograph is left out and named; the page is written, exit 3
    (images / "broken.jpg").write_bytes(b"not a picture")
    out.unlink()
    monkeypatch.setattr(sys, "argv", [*args, "overwrite=true"])
    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 3
    assert "broken" in capsys.readouterr().err
    text = out.read_text()
    assert '"unreadable":["broken"]' in text
    assert text.count("data:image/jpeg;base64,") == 2


def test_cli_takes_diameter_match_distance_and_expected_count_from_the_model(tmp_path, monkeypatch):
    import json

    from topaz_lightning.cli.browse import main
    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.io.coordinates import write_coordinates
    from topaz_lightning.io.micrographs import write_micrograph
    from topaz_lightning.models import Conv31, save_model

    picks, images, truth = _scene(["m1", "m2"], shape=(96, 128))
    for name, image in images.items():
        write_micrograph(tmp_path / "mics" / f"{name}.mrc", image)
    write_coordinates(picks, tmp_path / "picks.tsv")
    write_coordinates(truth, tmp_path / "truth.tsv")
    geometry = RunGeometry(
        downsample=2.0,
        particle_radius_px=7.0,
        label_radius_px_model=1.0,
        match_distance_px_model=2.5,
        pi=0.05,
    )
    save_model(
        tmp_path / "model.pt", Conv31(widths=[2, 2, 2]), extra={"geometry": geometry.to_dict()}
    )
    out = tmp_path / "p.html"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "tzl-browse",
            f"picks={tmp_path / 'picks.tsv'}",
            f"micrographs={tmp_path / 'mics'}",
            f"truth={tmp_path / 'truth.tsv'}",
            f"model_path={tmp_path / 'model.pt'}",
            f"output={out}",
        ],
    )
    main()
    text = out.read_text()
    data = json.loads(re.search(r'id="tzl-data">(.*?)</script>', text, re.S).group(1))
    assert data["particle_diameter_px"] == 14.0
    assert data["match_distance_px"] == 5.0  # 2.5 model px at downsample 2
    # pi * (96 / 2) * (128 / 2) / disk_area(1) = 0.05 * 3072 / 5
    assert [m["expected"] for m in data["micrographs"]] == pytest.approx([30.72, 30.72])
    assert data["expected_source"] == "the model's pi"


def test_cli_help_names_existing_keys(monkeypatch, capsys):
    from tests.conftest import compose_config
    from tests.test_cli_help import _exists, _help_text, _listed_keys

    text = _help_text("browse", monkeypatch, capsys)
    assert text.startswith("tzl-browse: ")
    listed = _listed_keys(text)
    cfg = compose_config("browse")
    for key in ("picks", "micrographs", "output", "model_path", "truth", "particle_diameter_px"):
        assert key in listed
    for key in listed:
        assert _exists(cfg, key), key
    for line in text.split("Main keys:", 1)[1].splitlines():
        assert len(line) <= 100, line


def test_page_with_no_picks_shows_every_particle_missed(chromium, tmp_path):
    picks, images, truth = _scene(["a", "b"])
    none = picks.iloc[:0]
    out = write_pick_browser(none, images, tmp_path / "p.html", 10.0, 5, truth=truth)
    page, problems = _open(chromium, out)
    assert int(page.get_attribute("#total-picks", "data-count")) == 0
    assert int(page.get_attribute("#total-truth", "data-missed")) == len(truth)
    assert page.locator("#btn-best-f1").is_disabled()
    assert problems == []
