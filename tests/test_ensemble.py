"""picker=ensemble (picking/ensemble.py): the mean logit of several models, through every scoring
mode and tzl-pick's whole pipeline, and the refusals of members that do not agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import compose_config
from tests.helpers import PixelLogitNet, admit_pixel_logit_net, blob_micrograph
from topaz_lightning.errors import ConfigError, InputError
from topaz_lightning.geometry import RunGeometry
from topaz_lightning.models import Conv31, ResNet8, save_model
from topaz_lightning.picking.coarse import coarse_scores
from topaz_lightning.picking.ensemble import EnsembleNet, EnsemblePicker, read_model_list
from topaz_lightning.picking.strided import window_scores

BLOBS = [(24.0, 26.0, 1.0), (70.0, 30.0, 0.9), (46.0, 74.0, 0.8), (90.0, 80.0, 0.7)]
QUIET = ("progress=false", "device=cpu", "num_workers=0")
GEOMETRY = dict(
    downsample=1.0,
    particle_radius_px=8.0,
    label_radius_px_model=2.0,
    nms_radius_px_model=6.0,
    match_distance_px_model=8.0,
    pi=0.01,
    normalize="none",
)


def _net(seed: int, widths=(4, 6, 8)) -> Conv31:
    torch.manual_seed(seed)
    net = Conv31(widths=widths)
    for module in net.modules():  # BatchNorm with non-trivial running statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _save(path, net, **geometry):
    extra = {"geometry": RunGeometry(**{**GEOMETRY, **geometry}).to_dict()}
    return str(save_model(path, net, extra=extra))


def _micrographs(root):
    from topaz_lightning.io.micrographs import write_micrograph

    for k in range(2):
        image = blob_micrograph(BLOBS, shape=(104, 120), noise_std=0.3, seed=k)
        write_micrograph(root / "mics" / f"m{k}.mrc", image)
    return root / "mics"


def _pick(root, out: str, *overrides: str):
    from topaz_lightning.pick import pick

    cfg = compose_config(
        "pick", [f"micrographs={root / 'mics'}", f"output_dir={root / out}", *QUIET, *overrides]
    )
    return pick(cfg)


def _ensemble(paths) -> str:
    return "picker.model_paths=[" + ",".join(str(p) for p in paths) + "]"


# ------------------------------------------------------------------------------------------------
# the network: the mean of the members' logits in every mode


def test_two_member_score_map_is_the_mean_of_the_two_maps():
    a, b = _net(0), _net(1)
    ensemble = EnsembleNet([a, b]).eval()
    images = torch.randn(2, 1, 45, 52)
    with torch.no_grad():
        expected = (a.score_map(images) + b.score_map(images)) / 2
        assert not torch.allclose(a.score_map(images), b.score_map(images), atol=1e-2)
        for method in ("dilated", "polyphase"):
            got = ensemble.score_map(images, method=method)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(
            ensemble.score_map(images, tile_size=16), expected, rtol=0, atol=1e-5
        )
        patches = torch.randn(5, 1, 31, 31)
        torch.testing.assert_close(
            ensemble(patches), (a(patches) + b(patches)) / 2, atol=1e-5, rtol=0
        )
        # the strided path's pieces: the coarse map and the exact windows
        torch.testing.assert_close(
            coarse_scores(ensemble, images),
            (coarse_scores(a, images) + coarse_scores(b, images)) / 2,
            rtol=0,
            atol=1e-5,
        )
        xy = np.array([[10, 12], [30, 40], [0, 0]])
        image = images[0, 0]
        np.testing.assert_allclose(
            window_scores(ensemble, image, xy, 2),
            (window_scores(a, image, xy, 2) + window_scores(b, image, xy, 2)) / 2,
            rtol=0,
            atol=1e-5,
        )


def test_one_member_is_the_member_exactly_and_the_geometry_is_the_members():
    a = _net(3)
    ensemble = EnsembleNet([a]).eval()
    images = torch.randn(1, 1, 40, 33)
    with torch.no_grad():
        assert torch.equal(ensemble.score_map(images), a.score_map(images))
        assert torch.equal(coarse_scores(ensemble, images), coarse_scores(a, images))
    assert ensemble.receptive_field == a.receptive_field
    assert ensemble.phase_strides == tuple(a.phase_strides)
    assert not any(p.requires_grad for p in ensemble.parameters())


def test_members_of_another_receptive_field_or_stride_are_refused_by_the_network():
    with pytest.raises(ValueError, match="receptive field"):
        EnsembleNet([_net(0), ResNet8(units=4)])
    reordered = _net(1)
    reordered.phase_strides = (1, 2, 2)  # same receptive field, another stride sequence
    with pytest.raises(ValueError, match="strides"):
        EnsembleNet([_net(0), reordered])
    with pytest.raises(ValueError, match="at least one"):
        EnsembleNet([])


# ------------------------------------------------------------------------------------------------
# tzl-pick picker=ensemble: the model picker's picks for one member and for identical members


@pytest.fixture
def models(tmp_path):
    _micrographs(tmp_path)
    return {
        "a": _save(tmp_path / "a.pt", _net(0)),
        "a_copy": _save(tmp_path / "a_copy.pt", _net(0)),
        "b": _save(tmp_path / "b.pt", _net(1)),
    }


def test_one_member_and_identical_members_give_the_model_pickers_picks(tmp_path, models):
    _, single = _pick(tmp_path, "single", f"model_path={models['a']}")
    _, one = _pick(tmp_path, "one", "picker=ensemble", _ensemble([models["a"]]))
    _, two = _pick(tmp_path, "two", "picker=ensemble", _ensemble([models["a"], models["a_copy"]]))
    expected = single["picks"]
    assert len(expected) > 4
    for got, atol in ((one["picks"], 0.0), (two["picks"], 1e-5)):
        assert list(got["micrograph"]) == list(expected["micrograph"])
        np.testing.assert_array_equal(got[["x", "y"]].to_numpy(), expected[["x", "y"]].to_numpy())
        np.testing.assert_allclose(got["score"], expected["score"], rtol=0, atol=atol)
    # the settings came from the first member's card, unchanged
    assert one["settings"].settings.nms_radius_px_model == 6.0
    assert two["settings"].settings == single["settings"].settings


def test_two_members_through_tzl_pick_score_the_mean_logit(tmp_path, models):
    """scoring=dense with saved score maps: the ensemble's map is the mean of the two models'."""
    from topaz_lightning.io.micrographs import read_micrograph

    maps = {}
    for out, overrides in {
        "a": (f"model_path={models['a']}",),
        "b": (f"model_path={models['b']}",),
        "ab": ("picker=ensemble", _ensemble([models["a"], models["b"]])),
    }.items():
        _pick(tmp_path, out, "scoring=dense", "save_score_maps=true", *overrides)
        files = sorted((tmp_path / out / "score_maps").glob("m0*.mrc"))
        assert len(files) == 1, files
        maps[out] = read_micrograph(files[0])
    np.testing.assert_allclose(maps["ab"], (maps["a"] + maps["b"]) / 2, rtol=0, atol=1e-5)
    assert np.abs(maps["a"] - maps["b"]).max() > 1e-2


def test_a_list_file_a_rerun_and_a_changed_member(tmp_path, models):
    listing = tmp_path / "models.txt"
    listing.write_text("# seeds\na.pt\n\nb.pt  # second\n", encoding="utf-8")
    assert read_model_list(listing) == [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]
    metrics, _ = _pick(tmp_path, "list", "picker=ensemble", f"picker.model_paths={listing}")
    assert metrics["pick/scored"] == 2
    # the same ensemble again: nothing is scored again
    metrics, _ = _pick(tmp_path, "list", "picker=ensemble", f"picker.model_paths={listing}")
    assert metrics["pick/scored"] == 0
    # another member: the job record's model hash changes (refused without overwrite)
    listing.write_text("a.pt\na_copy.pt\n", encoding="utf-8")
    with pytest.raises(Exception, match="model_sha256"):
        _pick(tmp_path, "list", "picker=ensemble", f"picker.model_paths={listing}")


# ------------------------------------------------------------------------------------------------
# refusals: the member's file and the field


@pytest.mark.parametrize(
    ("geometry", "field"),
    [
        (
            {"downsample": 2.0, "particle_radius_px": 16.0, "match_distance_px_model": 8.0},
            "downsample",
        ),
        ({"particle_radius_px": 9.0}, "particle_radius_px"),
        ({"nms_radius_px_model": 7.0}, "nms_radius_px_model"),
        ({"normalize": "standardize"}, "normalize"),
        ({"pi": 0.02}, "pi"),
    ],
)
def test_members_with_another_geometry_are_refused_naming_file_and_field(tmp_path, geometry, field):
    first = _save(tmp_path / "first.pt", _net(0))
    other = _save(tmp_path / "other.pt", _net(1), **geometry)
    with pytest.raises(InputError) as info:
        EnsemblePicker([first, other]).load(None)
    assert info.value.path == other and info.value.where == f"geometry.{field}"
    assert "first.pt" in str(info.value)


def test_members_of_another_architecture_or_gmm_fit_are_refused(tmp_path, monkeypatch):
    from topaz_lightning.preprocess.gmm import GMMFit

    first = _save(tmp_path / "first.pt", _net(0))
    wide = _save(tmp_path / "resnet.pt", ResNet8(units=4))
    with pytest.raises(InputError, match="receptive_field") as info:
        EnsemblePicker([first, wide]).load(None)
    assert info.value.path == wide

    def gmm(mu1: float) -> dict:
        fit = GMMFit(0.7, np.array([0.0, mu1]), np.array([1.0, 1.0]), np.array([1.0]), ["m"])
        return fit.to_record()

    paths = []
    # dominant component 1 (pi 0.7): mu' 1.0 vs 1.05 (0.05 sigma') is a seed's sampling noise,
    # 1.5 (0.5 sigma') is another normalization
    for k, mu1 in enumerate((1.0, 1.05, 1.5)):
        extra = {
            "geometry": RunGeometry(**{**GEOMETRY, "normalize": "gmm"}).to_dict(),
            "normalize_fit": gmm(mu1),
        }
        paths.append(str(save_model(tmp_path / f"g{k}.pt", _net(k), extra=extra)))
    assert EnsemblePicker(paths[:2]).load(None).net.num_features == 2
    with pytest.raises(InputError, match="normalize alike") as info:
        EnsemblePicker([paths[0], paths[2]]).load(None)
    assert info.value.path == paths[2] and info.value.where == "normalize_fit"
    # a network without trunk/strides (a score-map-only model) cannot join
    admit_pixel_logit_net(monkeypatch)
    pixel = str(save_model(tmp_path / "pixel.pt", PixelLogitNet(), extra={}))
    with pytest.raises(InputError, match="PatchClassifier") as info:
        EnsemblePicker([first, pixel]).load(None)
    assert info.value.path == pixel


def test_missing_or_bad_model_paths_are_config_or_input_errors(tmp_path):
    with pytest.raises(ConfigError, match="picker.model_paths.*required"):
        EnsemblePicker().load(None)
    with pytest.raises(ConfigError, match="picker.model_paths.*required"):
        EnsemblePicker([]).load(None)
    with pytest.raises(ConfigError, match="model_path"):
        EnsemblePicker(["a.pt"]).load("model.pt")
    with pytest.raises(InputError, match="model list not found"):
        EnsemblePicker(str(tmp_path / "nothing.txt")).load(None)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing here\n\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"empty\.txt.*lists no model files"):
        EnsemblePicker(str(empty)).load(None)
    with pytest.raises(InputError, match="missing.pt"):
        EnsemblePicker([str(tmp_path / "missing.pt")]).load(None)
    with pytest.raises(ConfigError, match="picker.model_paths"):
        EnsemblePicker([1, 2]).load(None)
