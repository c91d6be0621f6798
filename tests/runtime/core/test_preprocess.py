import numpy as np
import pytest

from ks_runtime.core.preprocess import Preprocess, as_uint8_colour, crop_box, to_network_input


def test_network_input_normalises_each_channel_in_nchw():
    spec = Preprocess(size=8, colour="RGB", mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    frame = np.zeros((8, 8, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 255, 0, 51
    out = to_network_input(frame, spec)
    assert out.shape == (1, 3, 8, 8) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, 0, 0], [1.0, -1.0, 0.2], rtol=1e-6)


def test_bgr_input_is_reordered():
    spec = Preprocess(size=8, colour="RGB", mean=(0, 0, 0), std=(1, 1, 1))
    rgb = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        to_network_input(rgb[..., ::-1].copy(), spec, colour_in="BGR"), to_network_input(rgb, spec)
    )


def test_resize_to_the_network_size():
    spec = Preprocess(size=8)
    out = to_network_input(np.full((2, 20, 16, 3), 128, np.uint8), spec)
    assert out.shape == (2, 3, 8, 8)


def test_grey_and_16_bit_frames_are_converted_and_floats_refused():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert as_uint8_colour(grey).shape == (3, 4, 3)
    deep = np.full((2, 2, 3), 65535, np.uint16)
    assert as_uint8_colour(deep).max() == 255
    with pytest.raises(ValueError, match="frame 7: expected 8- or 16-bit"):
        as_uint8_colour(np.zeros((2, 2, 3), np.float32), "frame 7")


def test_crop_box_replicates_the_border_outside_the_image():
    frame = np.arange(16, dtype=np.uint8).reshape(4, 4)[..., None].repeat(3, 2)
    crop = crop_box(frame, (-1, -1, 2, 2))
    assert crop.shape == (3, 3, 3)
    assert crop[0, 0, 0] == frame[0, 0, 0] and crop[2, 2, 0] == frame[1, 1, 0]


def test_bad_specs_are_refused():
    with pytest.raises(ValueError):
        Preprocess(size=64, colour="HSV")
    assert Preprocess.from_dict(Preprocess(size=64).to_dict()) == Preprocess(size=64)
