"""ks-serve's wire rules without a server: image sizes read from headers, frame checks, the rate limit, commands."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ks_runtime.core.errors import ConfigError
from ks_runtime.serve.protocol import (
    FrameRate,
    Limits,
    Refusal,
    check_frame,
    decode_frame,
    image_size,
    parse_command,
)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
@pytest.mark.parametrize("shape", [(48, 64), (301, 17)])
def test_the_size_is_read_from_the_header_of_every_format(suffix, shape):
    image = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    for params in ([], [cv2.IMWRITE_WEBP_QUALITY, 101]) if suffix == ".webp" else ([],):  # lossy and lossless WebP
        ok, data = cv2.imencode(suffix, image, params)
        assert ok
        assert image_size(data.tobytes(), "frame 0")[1:] == (shape[1], shape[0])


def test_a_frame_is_refused_before_decoding_naming_the_limit():
    limits = Limits(max_frame_bytes=2048, max_side=32)
    flat_and_wide = cv2.imencode(".png", np.zeros((8, 40, 3), np.uint8))[1].tobytes()
    with pytest.raises(Refusal) as side:
        check_frame(flat_and_wide, 7, limits)
    assert side.value.reason == "max_side" and side.value.limit == 32 and "frame 7" in str(side.value)
    with pytest.raises(Refusal) as size:
        check_frame(b"\x89PNG" + bytes(4096), 8, limits)
    assert size.value.to_message(8) == {
        "type": "error",
        "message": "frame 8: 4100 bytes is over max_frame_bytes=2048",
        "reason": "max_frame_bytes",
        "limit": "max_frame_bytes",
        "value": 2048,
        "index": 8,
    }
    with pytest.raises(Refusal, match="not a JPEG, PNG or WebP") as other:
        check_frame(b"GIF89a" + bytes(20), 9, limits)
    assert other.value.reason == "format"


def test_decoding_gives_rgb():
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 2] = 200  # red, in OpenCV's order
    rgb = decode_frame(cv2.imencode(".png", bgr)[1].tobytes(), 0, Limits())
    assert rgb.shape == (4, 4, 3) and rgb[0, 0].tolist() == [200, 0, 0]
    with pytest.raises(Refusal, match="frame 3: OpenCV cannot decode"):
        decode_frame(b"\xff\xd8\xff\xd9", 3, Limits())


def test_the_rate_limit_counts_the_last_second():
    rate = FrameRate(2)
    assert [rate.admit(t) for t in (0.0, 0.1, 0.2, 0.9, 1.05, 1.2)] == [True, True, False, False, True, True]


def test_commands_and_their_refusals():
    limits = Limits(max_fps=30, max_side=640)
    assert parse_command('{"stop": true}', limits) == "stop"
    assert parse_command('{"start": {"fps": 15, "width": 640, "height": 480}}', limits) == "start"
    for text, words in [
        ("stop", "must be JSON"),
        ('{"pause": 1}', "unknown message"),
        ('{"start": {"fps": 60}}', "fps=60 is over max_fps=30"),
        ('{"start": {"width": 1280}}', "over max_side=640"),
        ('{"start": {"colour": "BGR"}}', "unknown field(s) colour"),
        ('{"start": {"fps": "fast"}}', "not a positive number"),
    ]:
        with pytest.raises(Refusal, match=words.replace("(", r"\(").replace(")", r"\)")):
            parse_command(text, limits)


def test_limits_out_of_range_name_the_field():
    with pytest.raises(ConfigError, match="max_streams=0 is out of range"):
        Limits(max_streams=0)
    with pytest.raises(ConfigError, match="max_fps=nan"):
        Limits(max_fps=float("nan"))
