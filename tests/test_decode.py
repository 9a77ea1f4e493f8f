"""OpenCV decoders on copies of real GTEA61 files, checked against PIL as an independent decoder."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ego_jax.data.decode import DecodeError, decode_gray, decode_rgb

SAMPLE = Path(__file__).parent / "data" / "gtea61_sample"


def _pil(name):
    return np.asarray(Image.open(SAMPLE / name))


def test_rgb_is_rgb_order_full_size():
    img = decode_rgb((SAMPLE / "rgb0011.png").read_bytes())
    assert img.shape == (256, 455, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, _pil("rgb0011.png"))


@pytest.mark.parametrize("name", ["flow_x_00020.png", "flow_y_00001.png"])
def test_flow_is_one_channel(name):
    pil = _pil(name)
    assert pil.shape == (256, 455, 3), "the release stores flow as 3 channels"
    np.testing.assert_array_equal(pil[..., 0], pil[..., 2])
    img = decode_gray((SAMPLE / name).read_bytes())
    assert img.shape == (256, 455) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, pil[..., 0])


def test_map_values_exactly_0_and_255():
    img = decode_gray((SAMPLE / "map0011.png").read_bytes())
    assert img.shape == (256, 455) and img.dtype == np.uint8
    assert set(np.unique(img).tolist()) == {0, 255}
    np.testing.assert_array_equal(img, _pil("map0011.png"))
    assert 0.001 < (img == 255).mean() < 0.2


@pytest.mark.parametrize("decode", [decode_rgb, decode_gray])
def test_truncated_file_raises(decode):
    data = (SAMPLE / "rgb0011.png").read_bytes()[:500]
    with pytest.raises(DecodeError, match="cannot decode"):
        decode(data)
