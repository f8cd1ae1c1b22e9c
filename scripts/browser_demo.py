"""The pick browser on real data, its screenshot for the docs, and its timings at 1,000 micrographs.

Two parts, each one command:

    # EMPIAR-10017 sample (4 JPEG micrographs + CryoPPP truth): difference-of-Gaussians picks
    # (a classical picker, so no trained model is needed) -> browser page -> screenshot
    OMP_NUM_THREADS=1 .venv/bin/python scripts/browser_demo.py screenshot --out browser_out

    # scale: N synthetic micrographs with P picks each -> page size, build time, and in Chromium
    # the load time and the time one threshold change takes to recount and redraw
    OMP_NUM_THREADS=1 .venv/bin/python scripts/browser_demo.py scale --out browser_out \
        --micrographs 1000 --picks 2300

Both open the page in Debian's Chromium (/usr/bin/chromium) through playwright.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples" / "empiar10017_dev"
CHROMIUM = "/usr/bin/chromium"
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
#: EMPIAR-10017 (beta-galactosidase) particle diameter in the sample JPEGs' pixels (CryoPPP's)
DIAMETER_PX = 108.0
#: annotated particles per micrograph of the sample, about (CryoPPP: 622-695)
EXPECTED_PER_MICROGRAPH = 650


def dog_sample_picks(downsample: int = 4) -> tuple[pd.DataFrame, dict]:
    """Difference-of-Gaussians picks on the sample micrographs, in the micrograph frame."""
    from topaz_lightning.baselines import dog_picks
    from topaz_lightning.geometry import coordinates_to_micrograph_frame, to_model_px
    from topaz_lightning.io.micrographs import list_micrographs, read_micrograph
    from topaz_lightning.preprocess import downsample as fourier_downsample

    files = list_micrographs(SAMPLE / "images")
    small = {name: fourier_downsample(read_micrograph(p), downsample) for name, p in files.items()}
    radius_px_model = to_model_px(DIAMETER_PX / 2, downsample)
    picks = dog_picks(small, radius_px_model, nms_radius_px=1.25 * radius_px_model)
    return coordinates_to_micrograph_frame(picks, downsample), files


def _open(browser, path: Path, viewport=(1280, 900)):
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    start = time.perf_counter()
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=600_000)
    return page, errors, time.perf_counter() - start


def screenshot(out: Path, image: Path) -> dict:
    from playwright.sync_api import sync_playwright

    from topaz_lightning.browser import write_pick_browser
    from topaz_lightning.io.coordinates import read_coordinates

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    picks, files = dog_sample_picks()
    pick_s = time.perf_counter() - start
    truth = read_coordinates(SAMPLE / "coords")
    start = time.perf_counter()
    page_path = write_pick_browser(
        picks,
        files,
        out / "empiar10017_dog.html",
        DIAMETER_PX,
        expected_per_micrograph=EXPECTED_PER_MICROGRAPH,
        truth=truth,
        overwrite=True,
        expected_source="the annotation",
        title="EMPIAR-10017 sample: difference-of-Gaussians picks",
    )
    build_s = time.perf_counter() - start
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page, errors, load_s = _open(browser, page_path, (1280, 1000))
        page.click("#btn-best-f1")
        # the last micrograph (with the carbon edge) enlarged, as a click on it does
        page.click(".card >> nth=3")
        page.wait_for_timeout(300)
        image.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(image), type="jpeg", quality=75, full_page=True)
        totals = page.inner_text("#totals")
        browser.close()
    # the page's matching (greedy by score) against tzl-evaluate's default (distance), same picks
    from topaz_lightning.browser import SCORE_DECIMALS
    from topaz_lightning.metrics import evaluate_picks

    rounded = picks.assign(score=picks["score"].round(SCORE_DECIMALS))
    by = {
        m: evaluate_picks(rounded, truth, DIAMETER_PX / 2, matching=m)
        for m in ("score", "distance")
    }
    result = {
        "picks": len(picks),
        "aupr_by_matching": {m: round(ev.aupr, 4) for m, ev in by.items()},
        "best_f1_by_matching": {m: round(ev.best_f1, 4) for m, ev in by.items()},
        "dog_picks_s": round(pick_s, 1),
        "build_s": round(build_s, 1),
        "page_mb": round(page_path.stat().st_size / 1e6, 2),
        "load_s": round(load_s, 2),
        "totals_at_best_f1": totals,
        "errors": errors,
        "screenshot": str(image),
    }
    print(json.dumps(result, indent=2))
    return result


def scale(out: Path, n_micrographs: int, picks_per: int, truth_per: int) -> dict:
    """Synthetic micrographs (smooth noise, 512 px, so thumbnails compress like real ones) with
    ``picks_per`` picks and ``truth_per`` true particles each."""
    from playwright.sync_api import sync_playwright
    from scipy.ndimage import gaussian_filter

    from topaz_lightning.browser import pick_counts, write_pick_browser

    rng = np.random.default_rng(0)
    side = 512
    base = [gaussian_filter(rng.normal(size=(side, side)), 2).astype(np.float32) for _ in range(8)]
    images = {f"mic{i:04d}": base[i % len(base)] for i in range(n_micrographs)}
    names = list(images)
    picks = pd.DataFrame(
        {
            "micrograph": np.repeat(names, picks_per),
            "x": rng.uniform(0, side, n_micrographs * picks_per),
            "y": rng.uniform(0, side, n_micrographs * picks_per),
            "score": rng.normal(size=n_micrographs * picks_per),
        }
    )
    truth = pd.DataFrame(
        {
            "micrograph": np.repeat(names, truth_per),
            "x": rng.uniform(0, side, n_micrographs * truth_per),
            "y": rng.uniform(0, side, n_micrographs * truth_per),
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    page_path = write_pick_browser(
        picks, images, out / "scale.html", 12.0, truth_per, truth=truth, overwrite=True
    )
    build_s = time.perf_counter() - start
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page, errors, load_s = _open(browser, page_path)
        count_ms, draw_ms, round_trip_s = [], [], []
        for value in ("0.5", "1.0", "-0.5", "0.0", "2.0", "-1.0"):
            start = time.perf_counter()
            page.fill("#threshold-value", value)
            page.wait_for_function(
                "(v) => Number(document.body.dataset.threshold) === v && "
                "document.body.dataset.drawn === document.body.dataset.threshold + '/0'",
                arg=float(value),
            )
            round_trip_s.append(time.perf_counter() - start)
            shown = int(page.get_attribute("#total-picks", "data-count"))
            assert shown == pick_counts(picks, float(value)).sum(), value
            # measured inside the page: recounting all micrographs, and drawing the page shown
            count_ms.append(float(page.get_attribute("body", "data-count-ms")))
            draw_ms.append(float(page.get_attribute("body", "data-draw-ms")))
        start = time.perf_counter()
        page.click("#next")
        page.wait_for_function("() => document.body.dataset.loaded === '24'")
        next_page_s = time.perf_counter() - start
        memory = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : null")
        browser.close()
    result = {
        "micrographs": n_micrographs,
        "picks": len(picks),
        "build_s": round(build_s, 1),
        "page_mb": round(page_path.stat().st_size / 1e6, 1),
        "load_s": round(load_s, 2),
        "recount_ms": count_ms,
        "draw_ms": draw_ms,
        "threshold_change_round_trip_s": [round(t, 3) for t in round_trip_s],
        "next_page_s": round(next_page_s, 3),
        "js_heap_mb": None if memory is None else round(memory / 1e6),
        "errors": errors,
    }
    print(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("screenshot", "scale"))
    parser.add_argument("--out", type=Path, default=Path("browser_out"))
    parser.add_argument("--image", type=Path, default=REPO / "docs" / "img" / "pick_browser.jpg")
    parser.add_argument("--micrographs", type=int, default=1000)
    parser.add_argument("--picks", type=int, default=2300)
    parser.add_argument("--truth", type=int, default=650)
    args = parser.parse_args()
    if args.part == "screenshot":
        screenshot(args.out, args.image)
    else:
        scale(args.out, args.micrographs, args.picks, args.truth)


if __name__ == "__main__":
    main()
