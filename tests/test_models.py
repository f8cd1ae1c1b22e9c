"""Classifiers over configs/model/*.yaml: shapes, receptive field, dense == patch; decoder; model files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import randomize_batchnorm
from topaz_lightning.errors import InputError, OutputExistsError
from topaz_lightning.models import (
    Conv31,
    Decoder,
    PReLUResNet8,
    ResNet8,
    ResNet16,
    load_model,
    receptive_field,
    save_model,
)
from topaz_lightning.models.base import DENSE_METHODS, dense_mode, merge_phases, split_phases
from topaz_lightning.models.decoder import upsampling_plan

CONFIG_FILES = sorted((Path(__file__).resolve().parents[1] / "configs" / "model").glob("*.yaml"))
# resnet8/resnet16 are Topaz's networks (its receptive fields); the *_prelu ones are this project's
EXPECTED_FIELD = {
    "conv31": 31,
    "resnet8": 71,
    "resnet16": 91,
    "resnet8_prelu": 49,
    "resnet16_prelu": 85,
}


def test_every_model_has_a_config():
    assert {p.stem for p in CONFIG_FILES} >= set(EXPECTED_FIELD)


@pytest.fixture(scope="module", params=CONFIG_FILES, ids=lambda p: p.stem)
def model(request):
    torch.manual_seed(0)
    cfg = OmegaConf.load(request.param)
    net = instantiate(cfg)
    randomize_batchnorm(net)
    net.eval()
    return request.param.stem, cfg, net


def test_receptive_field_and_shapes(model):
    name, _, net = model
    w = net.receptive_field
    if name in EXPECTED_FIELD:
        assert w == EXPECTED_FIELD[name]
    assert w % 2 == 1
    patches = torch.randn(5, 1, w, w)
    assert net(patches).shape == (5,)
    features = net.features(patches)
    assert features.shape == (5, net.num_features)
    assert torch.equal(net.logits_from_features(features), net(patches))
    assert net.score_map(torch.randn(2, 1, 13, 17)).shape == (2, 13, 17)


def test_larger_patches_are_centre_cropped(model):
    _, _, net = model
    w = net.receptive_field
    big = torch.randn(3, 1, w + 6, w + 6)
    with torch.no_grad():
        torch.testing.assert_close(net(big), net(big[..., 3 : 3 + w, 3 : 3 + w]))
    with pytest.raises(ValueError, match="receptive field"):
        net(torch.randn(1, 1, w - 2, w - 2))


def test_receptive_field_is_exact(model):
    # every pixel of the w x w patch, edges included, influences the logit; together with
    # dense == patch below this pins the dense receptive field to exactly w x w
    _, _, net = model
    w = net.receptive_field
    patch = torch.randn(1, 1, w, w, requires_grad=True)
    net(patch).sum().backward()
    support = patch.grad[0, 0] != 0
    assert support.any(1).all() and support.any(0).all()
    assert support[0].any() and support[-1].any() and support[:, 0].any() and support[:, -1].any()


@pytest.mark.parametrize("method", DENSE_METHODS)
def test_dense_scores_equal_patch_scores(model, method):
    _, _, net = model
    w, r = net.receptive_field, net.receptive_field // 2
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(2, 1, 23, 29, generator=gen)
    with torch.no_grad():
        dense = net.score_map(images, method=method)
        padded = F.pad(images, (r, r, r, r))
        # random centres plus all four corners and edge midpoints
        ys = torch.randint(0, 23, (12,), generator=gen).tolist() + [0, 0, 22, 22, 11, 0]
        xs = torch.randint(0, 29, (12,), generator=gen).tolist() + [0, 28, 0, 28, 0, 14]
        for b in range(2):
            patches = torch.stack(
                [padded[b, :, y : y + w, x : x + w] for y, x in zip(ys, xs, strict=True)]
            )
            torch.testing.assert_close(dense[b, ys, xs], net(patches), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", DENSE_METHODS)
def test_tiled_score_map_equals_untiled(model, method):
    _, _, net = model
    images = torch.randn(1, 1, 19, 26)
    with torch.no_grad():
        torch.testing.assert_close(
            net.score_map(images, tile_size=7, method=method),
            net.score_map(images, method=method),
            atol=1e-5,
            rtol=1e-5,
        )


@pytest.mark.parametrize(
    "shape, tile_size",
    [((2, 1, 1, 1), None), ((1, 1, 2, 3), None), ((2, 1, 33, 40), None), ((1, 1, 37, 30), 9)],
)
def test_polyphase_and_dilated_methods_agree(model, shape, tile_size):
    # odd and even sizes (every split pads odd maps) and odd tiles against the dilated reference
    _, _, net = model
    gen = torch.Generator().manual_seed(sum(shape))
    images = torch.randn(*shape, generator=gen)
    with torch.inference_mode():
        net.fold_batchnorm = False  # the layers exactly as written
        try:
            reference = net.score_map(images, method="dilated")
        finally:
            net.fold_batchnorm = True
        got = net.score_map(images, tile_size=tile_size, method="polyphase")
        dilated = net.score_map(images, tile_size=tile_size, method="dilated")
        default = net.score_map(images, tile_size=tile_size)
    assert got.shape == dilated.shape == reference.shape == (shape[0], *shape[2:])
    torch.testing.assert_close(got, reference, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dilated, reference, atol=1e-4, rtol=1e-4)  # BatchNorm folded
    assert torch.equal(default, dilated)  # dilated is the default (faster on CPU)


def test_score_map_rejects_unknown_method():
    with pytest.raises(ValueError, match="method"):
        Conv31().eval().score_map(torch.zeros(1, 1, 8, 8), method="unfold")
    with pytest.raises(ValueError, match="method"):
        dense_mode("strided")
    assert dense_mode(True) == "dilated" and dense_mode(False) == "patch"


@pytest.mark.parametrize("stride, h, w", [(2, 5, 6), (2, 1, 1), (3, 7, 4), (1, 3, 3)])
def test_split_phases_matches_slicing_and_merge_inverts(stride, h, w):
    x = torch.arange(2 * 3 * h * w, dtype=torch.float32).view(2, 3, h, w)
    parts = split_phases(x, stride)
    ph, pw = -(-h // stride), -(-w // stride)
    assert parts.shape == (2 * stride * stride, 3, ph, pw)
    for n in range(2):
        for i in range(stride):
            for j in range(stride):
                comp = parts[n * stride * stride + i * stride + j]
                expected = x[n, :, i::stride, j::stride]  # the obvious definition
                rows, cols = expected.shape[-2:]
                assert torch.equal(comp[:, :rows, :cols], expected)
                assert not comp[:, rows:].any() and not comp[:, :, cols:].any()  # zero padding
    assert torch.equal(merge_phases(parts, stride)[..., :h, :w], x)


def test_channels_last_gives_same_scores(model):
    _, _, net = model
    w = net.receptive_field
    patches = torch.randn(4, 1, w, w)
    with torch.no_grad():
        expected = net(patches)
        got = net(patches.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_training_step_reaches_every_parameter(model):
    _, cfg, _ = model
    net = instantiate(cfg).train()
    w = net.receptive_field
    net(torch.randn(8, 1, w, w)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_receptive_field_arithmetic():
    assert receptive_field([(7, 2), (5, 2), (5, 1)]) == 31
    assert receptive_field([(3, 1)] * 4) == 9


@pytest.mark.parametrize("patch_size", [31, 49, 71, 85, 91, 21, 15, 7, 64])
def test_decoder_output_shape(patch_size):
    dec = Decoder(num_features=128, patch_size=patch_size)
    out = dec(torch.randn(6, 128))
    assert out.shape == (6, 1, patch_size, patch_size)
    out.square().mean().backward()
    assert all(p.grad is not None for p in dec.parameters())


def test_decoder_has_only_transposed_convolutions_up_to_the_patch():
    # the native ladder 1 -> 4 -> 8 -> 16 -> 31 (channels 128, 64, 32, 1) for conv31's patches,
    # checked layer by layer with the transposed-convolution size formula
    dec = Decoder(num_features=128, patch_size=31)
    convs = [m for m in dec.layers if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [m.out_channels for m in convs] == [128, 64, 32, 1]
    size, sizes = 1, []
    for m in convs:
        k, s, p, op = m.kernel_size[0], m.stride[0], m.padding[0], m.output_padding[0]
        size = (size - 1) * s - 2 * p + k + op
        sizes.append(size)
    assert sizes == [4, 8, 16, 31]
    allowed = (torch.nn.ConvTranspose2d, torch.nn.BatchNorm2d, torch.nn.LeakyReLU)
    assert all(isinstance(m, allowed) for m in dec.layers)
    assert upsampling_plan(31) == (4, [0, 0], 0)


def test_decoder_fits_every_model_config(configs_dir):
    make = instantiate(OmegaConf.load(configs_dir / "decoder" / "dcgan.yaml"))
    for path in CONFIG_FILES:
        net = instantiate(OmegaConf.load(path))
        w = net.receptive_field
        dec = make(num_features=net.num_features, patch_size=w)
        patches = torch.randn(2, 1, w, w)
        assert dec(net.features(patches)).shape == patches.shape, path.stem


def test_topaz_resnet_parameter_counts():
    # by hand from Topaz's layer list (units 32, BatchNorm: convs without bias, BN 2 per channel)
    basic7 = 49 * 32 + 2 * 32
    block_u = 2 * (32 * 32 * 9 + 2 * 32)  # conv0 + bn0, conv1 + bn1 (of the sum)
    block_u_2u = 32 * 32 * 9 + 2 * 32 + 32 * 64 * 9 + 32 * 64 + 2 * 64  # + 1x1 projection
    block_2u = 2 * (64 * 64 * 9 + 2 * 64)
    basic5 = 64 * 128 * 25 + 2 * 128
    linear = 128 + 1
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(ResNet8()) == basic7 + block_u + block_u_2u + block_2u + basic5 + linear
    assert count(ResNet16()) == basic7 + 4 * block_u + block_u_2u + 2 * block_2u + basic5 + linear
    assert count(ResNet8()) == 329_249 and count(ResNet16()) == 458_913
    # without BatchNorm (Topaz's pretrained models): each conv but the projection has a bias
    no_bn = (
        (49 * 32 + 32)
        + 2 * (32 * 32 * 9 + 32)
        + (32 * 32 * 9 + 32 + 32 * 64 * 9 + 64 + 32 * 64)
        + 2 * (64 * 64 * 9 + 64)
        + (64 * 128 * 25 + 128)
        + linear
    )
    assert count(ResNet8(bn=False)) == no_bn == 328_801
    assert all(not isinstance(m, torch.nn.PReLU) for m in ResNet8().modules())


def test_decoder_from_config_reconstructs_classifier_features(configs_dir):
    net = Conv31()
    make = instantiate(OmegaConf.load(configs_dir / "decoder" / "dcgan.yaml"))
    dec = make(num_features=net.num_features, patch_size=net.receptive_field)
    patches = torch.randn(4, 1, 31, 31)
    assert dec(net.features(patches)).shape == patches.shape


def test_decoder_rejects_wrong_features():
    with pytest.raises(ValueError, match="features"):
        Decoder(num_features=128, patch_size=31)(torch.randn(2, 64))


def test_save_load_round_trip(model, tmp_path):
    _, cfg, net = model
    path = tmp_path / "model.pt"
    extra = {"pi": 0.02, "downsample": 4, "nested": {"radius_px": 3}}
    save_model(path, net, OmegaConf.to_container(cfg), extra=extra)
    loaded, got_extra = load_model(path)
    assert got_extra == extra and not loaded.training
    w = net.receptive_field
    patches, images = torch.randn(3, 1, w, w), torch.randn(1, 1, 12, 14)
    with torch.no_grad():
        assert torch.equal(loaded(patches), net(patches))
        assert torch.equal(loaded.score_map(images), net.score_map(images))


def test_save_uses_net_config_and_refuses_overwrite(tmp_path):
    import numpy as np

    net = PReLUResNet8(width=8).eval()
    path = save_model(tmp_path / "m.pt", net, extra={"pi": np.float64(0.1)})
    loaded, extra = load_model(path)
    assert isinstance(loaded, PReLUResNet8) and loaded.num_features == 32 and extra == {"pi": 0.1}
    with pytest.raises(OutputExistsError):
        save_model(path, net)
    save_model(path, net, overwrite=True)
    with pytest.raises(TypeError, match="extra.bad"):
        save_model(tmp_path / "n.pt", net, extra={"bad": object()})
    assert not (tmp_path / "n.pt").exists()


def test_load_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        load_model(tmp_path / "absent.pt")
    assert "absent.pt" in str(err.value)


def test_load_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.pt"
    save_model(path, Conv31())
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="corrupt.pt"):
        load_model(path)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(InputError, match="text.pt"):
        load_model(text)


def test_load_foreign_torch_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(Conv31().state_dict(), path)
    with pytest.raises(InputError, match="not a topaz_lightning.model file"):
        load_model(path)


def test_load_mismatched_weights(tmp_path):
    path = tmp_path / "m.pt"
    save_model(
        path, Conv31(), {"_target_": "topaz_lightning.models.Conv31", "widths": [16, 64, 128]}
    )
    with pytest.raises(InputError, match="state_dict") as err:
        load_model(path)
    assert "m.pt" in str(err.value)


def test_load_unknown_target(tmp_path):
    path = tmp_path / "m.pt"
    save_model(path, Conv31(), {"_target_": "topaz_lightning.models.NoSuchNet"})
    with pytest.raises(InputError, match="model_config"):
        load_model(path)


def test_batchnorm_folding_only_in_eval_dense_scoring():
    torch.manual_seed(0)
    net = Conv31()
    randomize_batchnorm(net)
    images = torch.randn(2, 1, 15, 18)
    with torch.no_grad():
        net.train()  # batch statistics: nothing to fold, the layers run as written
        folded = net.score_map(images)
        net.fold_batchnorm = False
        assert torch.equal(net.score_map(images), folded)
        net.eval()
        unfolded = net.score_map(images)
        net.fold_batchnorm = True
        torch.testing.assert_close(net.score_map(images), unfolded, atol=1e-5, rtol=1e-5)
    assert not torch.equal(folded, unfolded)  # train vs eval BatchNorm really differ


# ---------------------------------------------------------------- the model card
def _card(**changes):
    import numpy as np

    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.models import ModelCard
    from topaz_lightning.preprocess.gmm import GMMFit

    fit = GMMFit(
        pi=0.3,
        mu=np.array([-1.0, 0.5]),
        sigma=np.array([0.8, 1.2]),
        alpha=np.array([0.9, 1.1]),
        names=["a", "b"],
    )
    values = dict(
        geometry=RunGeometry(downsample=2.0, pi=0.04, pi_unlabeled=0.03, normalize="gmm"),
        preprocessing={"downsample": 2.0, "normalize": "gmm", "gmm": fit.to_record()},
        objective={"configured": "x.GEBinomial", "optimized": "PN", "prior": "pi"},
        training={
            "receptive_field": 31,
            "patch_size_px_model": 31,
            "data_fingerprint": "ab",
            "num_unlabeled_micrographs": 2,
        },
    )
    values.update(changes)
    return ModelCard(**values)


def test_model_card_round_trips_and_extra_is_its_view(tmp_path):
    from topaz_lightning.models import CARD_VERSION, read_model_card

    card = _card()
    path = save_model(tmp_path / "model.pt", Conv31(widths=(4, 4, 8)), card=card)
    stored = torch.load(path, map_location="cpu", weights_only=True)["extra"]
    assert set(stored) == {"card"} and stored["card"]["card_version"] == CARD_VERSION == 2
    _, extra = load_model(path)
    again = read_model_card(extra, path)
    assert again == card and again.downsample == 2.0 and again.normalize == "gmm"
    assert again.training["num_unlabeled_micrographs"] == 2
    # the keys that readers of older files use, taken from the card
    assert extra["geometry"] == card.geometry.to_dict()
    assert extra["normalize_fit"] == card.preprocessing["gmm"]
    assert extra["objective_optimized"] == "PN" and extra["receptive_field"] == 31
    assert "preprocess" not in extra


def test_model_file_from_before_the_card_still_loads(tmp_path):
    """The 0.1 format: geometry, preprocess and normalize_fit as loose extra keys."""
    import numpy as np

    from topaz_lightning.geometry import RunGeometry
    from topaz_lightning.models import read_model_card
    from topaz_lightning.preprocess.gmm import GMMFit

    fit = GMMFit(
        pi=0.3, mu=np.array([-1.0, 0.5]), sigma=np.array([0.8, 1.2]), alpha=np.ones(1), names=["m"]
    )
    old = {
        "geometry": RunGeometry(downsample=4.0, pi=0.02, normalize="gmm").to_dict(),
        "preprocess": {"downsample": 4.0, "normalize": "gmm"},
        "normalize_fit": fit.as_dict(),
        "receptive_field": 31,
        "patch_size": 31,
        "objective": "topaz_lightning.objectives.GEBinomial",
        "objective_optimized": "GEBinomial",
    }
    path = save_model(tmp_path / "old.pt", Conv31(widths=(4, 4, 8)), extra=old)
    _, extra = load_model(path)
    # read as stored (as_dict() wrote a NaN log-likelihood, which compares unequal to itself)
    assert {k: v for k, v in extra.items() if k != "normalize_fit"} == {
        k: v for k, v in old.items() if k != "normalize_fit"
    }
    assert extra["normalize_fit"]["alpha"] == {"m": 1.0}
    card = read_model_card(extra, path)
    assert card.card_version == 1 and card.downsample == 4.0 and card.geometry.pi == 0.02
    assert card.objective["optimized"] == "GEBinomial"
    assert card.training == {"receptive_field": 31, "patch_size_px_model": 31}
    assert GMMFit.from_record(card.preprocessing["gmm"]).names == ["m"]
    # a very old file with preprocess only
    bare = save_model(tmp_path / "bare.pt", Conv31(widths=(4, 4, 8)), extra=old["preprocess"])
    assert read_model_card({"preprocess": load_model(bare)[1]}).downsample == 4.0


@pytest.mark.parametrize(
    "change, where",
    [
        ({"card_version": 99}, "card_version"),
        ({"card_version": "2"}, "card_version"),
        ({"geometry": {"pi": "0.5"}}, "geometry"),
        ({"preprocessing": {"gmm": {"pi": float("nan"), "mu": [0, 1], "sigma": [1, 1]}}}, "fit"),
        ({"preprocessing": {"downsample": 0.5}}, "downsample"),
        ({"objective": {"optimized": ["os.system"]}}, "objective.optimized"),
        ({"training": {"global_step": -3}}, "training.global_step"),
        ({"training": "evil"}, "training"),
    ],
)
def test_malformed_model_card_is_an_input_error(tmp_path, change, where):
    record = _card().to_record() | change
    path = tmp_path / "model.pt"
    save_model(path, Conv31(widths=(4, 4, 8)), extra={"card": record})
    with pytest.raises(InputError, match=where) as err:
        load_model(path)
    assert "model.pt" in str(err.value)
