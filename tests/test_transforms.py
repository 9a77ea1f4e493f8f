"""Spatial transforms vs the reference (PIL, torchvision-style) chain, flow flip, motion-map targets, normalisation."""

import cv2
import numpy as np
import pytest
from PIL import Image

from ego_jax.data import transforms
from ego_jax.data.transforms import Spatial


def _textured(height, width, channels=3, seed=0):
    """A smooth random image, closer to camera frames than white noise."""
    noise = np.random.default_rng(seed).random((height // 4 + 2, width // 4 + 2, channels)).astype(np.float32)
    img = cv2.resize(noise * 255, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(img, 0, 255).astype(np.uint8).reshape(height, width, channels).squeeze()


def test_resized_shape_follows_reference_scale():
    assert transforms.resized_shape(256, 455, 256) == (256, 455)  # already the size: untouched
    assert transforms.resized_shape(48, 80, 64) == (64, 106)  # int(64 * 80 / 48) = int(106.67)
    assert transforms.resized_shape(80, 48, 32) == (53, 32)


def test_eval_spatial_is_the_reference_centre_crop():
    # (455 - 224) / 2 = 115.5 rounds half to even -> 116; (256 - 224) / 2 = 16.
    assert transforms.eval_spatial(256, 455) == Spatial((256, 455), (116, 16, 340, 240), 224, False)
    with pytest.raises(ValueError, match="crop"):
        transforms.eval_spatial(48, 80, resize=48, crop=64)


def test_train_crop_sides_and_positions_come_from_the_scale_set():
    sides, corners = set(), set()
    for seed in range(300):
        sp = transforms.train_spatial(np.random.default_rng(seed), 48, 80, resize=64, crop=32)
        x1, y1, x2, y2 = sp.box
        assert sp.resized == (64, 106) and sp.size == 32
        assert x2 - x1 == y2 - y1 and 0 <= x1 and x2 <= 106 and 0 <= y1 and y2 <= 64
        sides.add(x2 - x1)
        if not sp.flip:
            corners.add((x1, y1))
    # int(64 * s) for s in {1, 0.875, 0.75, 0.65625}.
    assert sides == {64, 56, 48, 42}
    # Side 56 at the five positions: centre x1 = 53 - 28, y1 = 32 - 28; right x1 = 106 - 56; bottom y1 = 64 - 56.
    assert {(25, 4), (0, 0), (50, 0), (0, 8), (50, 8)} <= corners


@pytest.mark.parametrize("seed", range(12))
def test_train_transform_matches_the_reference_pil_chain(seed):
    img = _textured(48, 80, seed=seed)
    resize, crop = 64, 48
    sp = transforms.train_spatial(np.random.default_rng(seed), 48, 80, resize=resize, crop=crop)
    # Same draws, in the documented order, fed to the reference geometry.
    rng = np.random.default_rng(seed)
    flip = rng.random() < 0.5
    scale = transforms.SCALES[rng.integers(4)]
    position = transforms.POSITIONS[rng.integers(5)]
    expected = transforms.reference_train_crop(
        Image.fromarray(img), flip, scale, position, resize=resize, crop=crop
    ).astype(int)
    got = transforms.apply(img, sp, method="pil").astype(int)
    # Enlarging runs OpenCV bilinear, which rounds differently from PIL's fixed point: up to 1 grey level per
    # resampling, and this chain resamples twice (48 -> 64 rows, then the crop -> 48).
    assert np.abs(got - expected).max() <= 2
    assert np.abs(got - expected).mean() < 0.5


def test_pil_method_shrinks_exactly_like_pil_and_cv2_is_close():
    img = _textured(64, 64)
    pil = np.asarray(Image.fromarray(img).resize((56, 56), Image.BILINEAR)).astype(int)
    np.testing.assert_array_equal(transforms.resize_bilinear(img, 56, 56, "pil"), pil)
    diff = np.abs(transforms.resize_bilinear(img, 56, 56, "cv2").astype(int) - pil)
    # No antialiasing: it differs, by less on real frames (mean 0.37) than on this busier texture.
    assert diff.max() > 1 and diff.mean() < 2.5
    with pytest.raises(ValueError, match="method"):
        transforms.resize_bilinear(img, 56, 56, "nearest")


def test_flip_negates_x_flow_only():
    row = np.array([10, 20, 30, 40, 50, 60], np.uint8)
    img = np.tile(row, (4, 1))
    # A non-square crop box is not what the loader makes, but size 4 x 4 from a 6-wide box keeps this hand-checkable.
    keep, flip = Spatial((4, 6), (1, 0, 5, 4), 4, False), Spatial((4, 6), (1, 0, 5, 4), 4, True)
    np.testing.assert_array_equal(transforms.apply_flow_x(img, keep)[0], [20, 30, 40, 50])
    np.testing.assert_array_equal(transforms.apply_flow_x(img, flip)[0], [205, 215, 225, 235])  # 255 - [50, 40, 30, 20]
    np.testing.assert_array_equal(transforms.apply(img, flip)[0], [50, 40, 30, 20])  # y-flow: mirrored only


def test_motion_target_on_a_hand_made_map():
    mmap = np.zeros((48, 80), np.uint8)
    mmap[8:16, 24:40] = 255  # half of cell (0, 0) of the centre crop rows 8:40, cols 24:56
    mmap[39, 55] = 255  # one pixel of cell (1, 1)
    mmap[:, :20] = 255  # outside the crop: must not count
    sp = transforms.eval_spatial(48, 80, resize=48, crop=32)
    assert sp.box == (24, 8, 56, 40)
    np.testing.assert_allclose(transforms.motion_target(mmap, sp, (2, 2)), [[0.5, 0], [0, 1 / 256]], atol=1e-7)
    np.testing.assert_array_equal(transforms.motion_target(mmap, sp, (2, 2), threshold=0.01), [[1, 0], [0, 0]])
    np.testing.assert_array_equal(transforms.motion_target(mmap, sp, (2, 2), threshold=0.0), [[1, 0], [0, 1]])
    flipped = Spatial(sp.resized, sp.box, sp.size, True)
    np.testing.assert_allclose(transforms.motion_target(mmap, flipped, (2, 2)), [[0, 0.5], [1 / 256, 0]], atol=1e-7)


def test_motion_target_weights_pixels_cut_by_a_cell_border():
    # 3 columns into 2 cells: cell 0 covers column 0 and half of column 1.
    sp = Spatial((3, 3), (0, 0, 3, 3), 3, False)
    left, middle = np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8)
    left[:, 0] = 255
    middle[:, 1] = 255
    np.testing.assert_allclose(transforms.motion_target(left, sp, (1, 2)), [[2 / 3, 0]], atol=1e-6)
    np.testing.assert_allclose(transforms.motion_target(middle, sp, (1, 2)), [[1 / 3, 1 / 3]], atol=1e-6)
