"""Border and striped-band masks for picking (topaz_lightning.picking.border)."""

import numpy as np
import pytest

from tests.helpers import PixelLogitNet
from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.picking.border import (
    BorderBands,
    artefact_mask,
    border_mask,
    detect_bands,
    keep_unmasked,
    picking_mask,
)
from topaz_lightning.picking.predict import PickSettings, pick_micrograph


def _striped(shape=(200, 240), top=12, right=20, seed=0):
    """Noise with a top band repeating one row and a right band repeating one column."""
    rng = np.random.default_rng(seed)
    image = rng.normal(size=shape)
    image[:top, :] = image[top, :]
    image[:, shape[1] - right :] = image[:, [shape[1] - right - 1]]
    return image


def test_detect_bands_finds_repeated_lines_only():
    bands = detect_bands(_striped())
    # the band is the repeated rows; the first image row after it differs from it as noise does
    assert bands.top == pytest.approx(11, abs=1)
    assert bands.right == pytest.approx(19, abs=1)
    assert bands.bottom == 0 and bands.left == 0


def test_detect_bands_none_on_noise():
    image = np.random.default_rng(1).normal(size=(256, 256))
    assert detect_bands(image) == BorderBands()
    assert not artefact_mask(image).any()


def test_detect_bands_none_on_small_images():
    # 40 px: the central 20 columns are too few to average a line's change reliably
    assert detect_bands(_striped(shape=(40, 40), top=4, right=0)) == BorderBands()


def test_detect_bands_ignores_bands_beyond_reach():
    image = _striped(shape=(200, 240), top=40)
    # 40 rows is beyond 10% of the height: only rows within reach count, so the band is cut at 20
    assert detect_bands(image, max_fraction=0.1).top == 20
    assert detect_bands(image, max_fraction=0.25).top == pytest.approx(39, abs=1)


def test_border_mask_margin_and_bands():
    mask = border_mask((50, 60), margin=3)
    assert mask[:3].all() and mask[-3:].all() and mask[:, :3].all() and mask[:, -3:].all()
    assert not mask[3:-3, 3:-3].any()
    mask = border_mask((50, 60), bands=BorderBands(top=5, right=4), band_padding=2)
    assert mask[:7].all() and not mask[7:, :-6].any() and mask[:, -6:].all()
    # the margin and the band: the larger wins on each side
    mask = border_mask((50, 60), margin=10, bands=BorderBands(top=5), band_padding=2)
    assert mask[:10].all() and not mask[10:40, 10:50].any()


def test_keep_unmasked_rounds_to_pixels():
    mask = border_mask((20, 20), margin=2)
    xy = np.array([[0.0, 10.0], [10.0, 10.0], [10.0, 17.6], [2.4, 2.4]])
    assert keep_unmasked(xy, mask).tolist() == [False, True, False, True]


def test_bad_settings_and_images():
    with pytest.raises(ConfigError):
        detect_bands(np.zeros((20, 20)), ratio=1.5)
    with pytest.raises(ConfigError):
        border_mask((10, 10), margin=-1)
    with pytest.raises(InputError):
        detect_bands(np.zeros((5, 5, 2)))


def test_pick_micrograph_drops_picks_on_bands():
    image = _striped(shape=(200, 200), top=15, right=0, seed=3).astype(np.float32) * 0.1
    image[:15, 60] = 5.0  # a bright column inside the top band: the best local maximum
    image[100, 100] = 4.0  # a bright spot inside the image
    plain = pick_micrograph(
        PixelLogitNet(), image, PickSettings(nms_radius_px_model=6.0, border_bands=False)
    ).picks
    assert (plain["y"] < 15).any()
    masked = pick_micrograph(
        PixelLogitNet(),
        image,
        PickSettings(nms_radius_px_model=6.0, border_bands=True, border_padding_px_model=3.0),
    ).picks
    assert not (masked["y"] < 14 + 3).any()
    assert ((masked["x"] == 100) & (masked["y"] == 100)).any()
    assert len(masked) < len(plain)
    # the mask is found on the model-frame image; coordinates leave in the micrograph frame
    scaled = pick_micrograph(
        PixelLogitNet(),
        image,
        PickSettings(nms_radius_px_model=6.0, border_bands=True, downsample=4.0),
    ).picks
    assert ((scaled["x"] == 400) & (scaled["y"] == 400)).any()
    assert not (scaled["y"] < 4 * 14).any()


def test_picking_mask_none_when_nothing_asked():
    assert picking_mask(np.zeros((20, 20))) is None
    assert picking_mask(np.zeros((20, 20)), margin=2).sum() == 20 * 20 - 16 * 16


def test_tzl_pick_refuses_bad_border_settings():
    from tests.conftest import compose_config
    from topaz_lightning.cli.validate import validate_pick

    base = ["model_path=m.pt", "micrographs=mics", "output_dir=out"]
    with pytest.raises(ConfigError, match="border_margin_px_model"):
        validate_pick(compose_config("pick", [*base, "border_margin_px_model=-1"]))
    with pytest.raises(ConfigError, match="border_bands"):
        validate_pick(compose_config("pick", [*base, "border_bands=maybe"]))
    validate_pick(compose_config("pick", base))
