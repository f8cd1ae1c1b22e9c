"""Tests for micrograph reading/writing (MRC, TIFF, PNG/JPEG), orientation, pixel size and listing."""

from __future__ import annotations

import warnings

import mrcfile
import numpy as np
import pytest
import tifffile
from PIL import Image

from topaz_lightning.errors import InputError, OutputExistsError
from topaz_lightning.io.micrographs import (
    list_micrographs,
    micrograph_name,
    read_micrograph,
    read_pixel_size,
    write_micrograph,
)

UCSF_MRC = "Ucsf_stack_1142_DW.mrc"
UCSF_STAR = "Ucsf_stack_1142_DW_autopick.star"


def _write_mrc(path, data, voxel_size=None):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        if voxel_size is not None:
            mrc.voxel_size = voxel_size
    return path


def test_ucsf_particle_position_survives_round_trip(ucsf_dir, tmp_path):
    import starfile

    src = ucsf_dir / UCSF_MRC
    image = read_micrograph(src)
    with mrcfile.open(src, permissive=True) as mrc:
        raw = np.array(mrc.data)
        nx, ny = int(mrc.header.nx), int(mrc.header.ny)
    # orientation: array [row, col] = [y, x] with no flip; the README gives nx x ny = 959 x 927
    assert image.shape == (ny, nx) == (927, 959)
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, raw)
    assert read_pixel_size(src) is None  # the header holds 1.0, i.e. unset

    star = starfile.read(ucsf_dir / UCSF_STAR)
    x, y = star["rlnCoordinateX"].iloc[0], star["rlnCoordinateY"].iloc[0]
    col, row = int(round(x)), int(round(y))
    assert 0 <= col < nx and 0 <= row < ny
    r = 8
    window = image[max(row - r, 0) : row + r + 1, max(col - r, 0) : col + r + 1].copy()

    out = write_micrograph(tmp_path / "copy.mrc", image, pixel_size_a=1.34)
    back = read_micrograph(out)
    np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(
        back[max(row - r, 0) : row + r + 1, max(col - r, 0) : col + r + 1], window
    )
    assert read_pixel_size(out) == pytest.approx(1.34, rel=1e-6)
    with mrcfile.open(out) as mrc:
        assert int(mrc.header.mode) == 2
        assert (int(mrc.header.nx), int(mrc.header.ny)) == (nx, ny)


def test_empiar10017_jpeg_reads_as_4096_square(empiar10017_dir):
    path = sorted((empiar10017_dir / "images").glob("*.jpg"))[0]
    image = read_micrograph(path)
    assert image.shape == (4096, 4096)
    assert image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 255
    assert read_pixel_size(path) is None


@pytest.mark.parametrize(
    "dtype,mode",
    [(np.int8, 0), (np.int16, 1), (np.float32, 2), (np.uint16, 6), (np.float16, 12)],
)
def test_each_mrc_mode_reads_correctly(tmp_path, dtype, mode):
    rng = np.random.default_rng(mode)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        data = rng.integers(info.min, info.max, size=(7, 11), endpoint=True).astype(dtype)
    else:
        data = (rng.standard_normal((7, 11)) * 100).astype(dtype)
    path = _write_mrc(tmp_path / f"mode{mode}.mrc", data)
    with mrcfile.open(path) as mrc:
        assert int(mrc.header.mode) == mode
    image = read_micrograph(path)
    assert image.shape == (7, 11) and image.dtype == np.float32
    np.testing.assert_array_equal(image, data.astype(np.float32))


def test_imod_unsigned_mode0(tmp_path):
    values = np.array([[0, 100, 200, 255]], np.uint8)
    path = _write_mrc(tmp_path / "imod.mrc", values.view(np.int8))
    np.testing.assert_array_equal(read_micrograph(path), values.view(np.int8))  # signed by default
    raw = bytearray(path.read_bytes())
    raw[152:160] = np.array([1146047817, 0], "<i4").tobytes()  # IMOD stamp, flags: unsigned
    path.write_bytes(bytes(raw))
    np.testing.assert_array_equal(read_micrograph(path), values)
    raw[156:160] = np.array([1], "<i4").tobytes()  # flag bit 0: signed bytes
    path.write_bytes(bytes(raw))
    np.testing.assert_array_equal(read_micrograph(path), values.view(np.int8))


def test_single_section_3d_mrc_is_a_micrograph(tmp_path):
    data = np.arange(30, dtype=np.float32).reshape(1, 5, 6)
    path = _write_mrc(tmp_path / "one.mrc", data)
    np.testing.assert_array_equal(read_micrograph(path), data[0])


def test_mrc_stack_is_refused(tmp_path):
    path = _write_mrc(tmp_path / "stack.mrc", np.zeros((3, 5, 6), np.float32))
    with pytest.raises(InputError, match=r"stack\.mrc.*3 sections"):
        read_micrograph(path)


def test_truncated_mrc_is_refused(tmp_path):
    path = _write_mrc(tmp_path / "trunc.mrc", np.ones((64, 64), np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(InputError, match=r"trunc\.mrc"):
        read_micrograph(path)


@pytest.mark.parametrize("content", [b"", b"not an mrc", bytes(range(256)) * 8])
def test_corrupt_mrc_is_refused(tmp_path, content):
    path = tmp_path / "junk.mrc"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"junk\.mrc"):
        read_micrograph(path)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # mrcfile's own header-stats warning
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixels_are_refused(tmp_path, bad):
    data = np.zeros((6, 6), np.float32)
    data[2, 4] = bad
    path = _write_mrc(tmp_path / "nan.mrc", data)
    with pytest.raises(InputError, match=r"nan\.mrc.*x=4, y=2"):
        read_micrograph(path)


def test_empty_image_is_refused(tmp_path):
    path = _write_mrc(tmp_path / "empty.mrc", np.zeros((0, 5), np.float32))
    with pytest.raises(InputError, match=r"empty\.mrc.*empty"):
        read_micrograph(path)


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(InputError, match=r"absent\.mrc.*not found"):
        read_micrograph(tmp_path / "absent.mrc")
    other = tmp_path / "image.xyz"
    other.write_bytes(b"123")
    with pytest.raises(InputError, match=r"image\.xyz.*unknown micrograph file extension"):
        read_micrograph(other)


def test_tiff_png_orientation_and_bit_depths(tmp_path):
    rng = np.random.default_rng(0)
    img16 = rng.integers(0, 65535, size=(9, 13), endpoint=True).astype(np.uint16)
    img16[2, 5] = 65535  # row 2, column 5 is (x=5, y=2)
    img8 = (img16 >> 8).astype(np.uint8)
    tifffile.imwrite(tmp_path / "a.tif", img16)
    tifffile.imwrite(tmp_path / "f.tiff", img16.astype(np.float32) / 7)
    Image.fromarray(img8).save(tmp_path / "b.png")
    Image.fromarray(img16).save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_micrograph(tmp_path / "a.tif"), img16)
    np.testing.assert_allclose(read_micrograph(tmp_path / "f.tiff"), img16.astype(np.float32) / 7)
    np.testing.assert_array_equal(read_micrograph(tmp_path / "b.png"), img8)
    np.testing.assert_array_equal(read_micrograph(tmp_path / "c.png"), img16)
    assert read_micrograph(tmp_path / "c.png")[2, 5] == 65535


def test_tiff_stack_is_refused(tmp_path):
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((4, 8, 8), np.uint16))
    with pytest.raises(InputError, match=r"stack\.tif.*4 sections"):
        read_micrograph(tmp_path / "stack.tif")


def test_colour_png_converted_to_luminance(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "grey_rgb.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # grey stored as RGB converts silently and exactly
        np.testing.assert_array_equal(read_micrograph(tmp_path / "grey_rgb.png"), gray)
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 50, 200
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    with pytest.warns(UserWarning, match="luminance"):
        image = read_micrograph(tmp_path / "colour.png")
    np.testing.assert_allclose(image, 0.299 * 100 + 0.587 * 50 + 0.114 * 200, rtol=1e-6)


def test_corrupt_jpeg_is_refused(tmp_path):
    path = tmp_path / "broken.jpg"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match=r"broken\.jpg"):
        read_micrograph(path)


def test_write_refuses_overwrite_and_keeps_old_file(tmp_path):
    path = write_micrograph(tmp_path / "out.mrc", np.ones((4, 5)))
    with pytest.raises(OutputExistsError):
        write_micrograph(path, np.zeros((4, 5)))
    np.testing.assert_array_equal(read_micrograph(path), np.ones((4, 5)))
    write_micrograph(path, np.full((4, 5), 2.0), pixel_size_a=3.5, overwrite=True)
    np.testing.assert_array_equal(read_micrograph(path), np.full((4, 5), 2.0))
    assert read_pixel_size(path) == pytest.approx(3.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mrc"]  # no temp files left
    write_micrograph(tmp_path / "nopix.mrc", np.ones((4, 5)))
    assert read_pixel_size(tmp_path / "nopix.mrc") is None
    with pytest.raises(ValueError, match="finite"):
        write_micrograph(tmp_path / "bad.mrc", np.full((4, 5), np.nan))
    assert not (tmp_path / "bad.mrc").exists()


def test_list_micrographs_directory_glob_list_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _write_mrc(data / "m2.mrc", np.ones((4, 4), np.float32))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(data / "m1.png")
    (data / "notes.txt").write_text("ignored")
    found = list_micrographs(data)
    assert list(found) == ["m1", "m2"]
    assert found["m2"] == data / "m2.mrc"
    assert list(list_micrographs(str(data / "*.mrc"))) == ["m2"]
    assert list(list_micrographs([data / "m2.mrc"])) == ["m2"]
    assert list(list_micrographs(data / "m1.png")) == ["m1"]
    listing = tmp_path / "mics.txt"
    listing.write_text("# my micrographs\ndata/m2.mrc\n\n" + str(data / "m1.png") + "\n")
    assert list_micrographs(listing) == {"m2": data / "m2.mrc", "m1": data / "m1.png"}
    assert micrograph_name("a/b/Falcon_1.jpg") == "Falcon_1"


def test_list_micrographs_errors(tmp_path):
    listing = tmp_path / "mics.txt"
    listing.write_text("# header\n\nmissing.mrc\n")
    with pytest.raises(InputError, match=r"mics\.txt: line 3.*not found"):
        list_micrographs(listing)
    listing.write_text("data.dat\n")
    with pytest.raises(InputError, match=r"mics\.txt: line 1.*unknown"):
        list_micrographs(listing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no micrograph files"):
        list_micrographs(empty)
    with pytest.raises(InputError, match="matched no micrograph"):
        list_micrographs(str(tmp_path / "*.mrc"))
    with pytest.raises(InputError, match="not found"):
        list_micrographs(tmp_path / "nowhere")
    _write_mrc(empty / "same.mrc", np.ones((2, 2), np.float32))
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(empty / "same.png")
    with pytest.raises(InputError, match="share the name 'same'"):
        list_micrographs(empty)


def test_read_micrograph_names_strips_only_image_extensions(tmp_path):
    from topaz_lightning.io.micrographs import read_micrograph_names

    listing = tmp_path / "names.txt"
    listing.write_text("# test split\nsub/mic_a.MRC\n\nmic.001\nC:\\data\\mic_c.jpg\n")
    assert read_micrograph_names(listing) == ["mic_a", "mic.001", "mic_c"]
    assert read_micrograph_names(("a/b.tiff", "c")) == ["b", "c"]
    one = _write_mrc(tmp_path / "mic_d.mrc", np.zeros((4, 4), np.float32))
    assert read_micrograph_names(one) == ["mic_d"]
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match="bad.txt"):
        read_micrograph_names(tmp_path / "bad.txt")
