"""CAM / motion overlays (image compositing)."""

import numpy as np
import pytest

from ego_jax.viz import cam


def test_upsample_peak_lands_in_its_cell():
    attention = np.zeros((7, 7), np.float32)
    attention[5, 1] = 3.0
    heat = cam.upsample_map(attention, (224, 224), normalize=True)
    assert heat.shape == (224, 224) and heat.dtype == np.float32
    row, col = np.unravel_index(np.argmax(heat), heat.shape)
    assert 5 * 32 <= row < 6 * 32 and 32 <= col < 2 * 32  # cell (5, 1) of a 7x7 grid spans 32 px
    # No output pixel centre sits exactly on the 7x7 cell centre (224/7 = 32, even), hence not exactly 1.
    assert heat.max() > 0.95 and heat.min() == 0.0
    # Bilinear, not nearest: the heat decreases smoothly away from the cell centre.
    centre = (5 * 32 + 16, 32 + 16)
    assert heat[centre] > heat[centre[0], centre[1] + 24] > heat[centre[0], centre[1] + 40] == 0.0


def test_upsample_non_square_and_constant():
    heat = cam.upsample_map(np.arange(6, dtype=np.float32).reshape(2, 3), (40, 90), normalize=False)
    assert heat.shape == (40, 90)
    assert heat[0, 0] == pytest.approx(0.0) and heat[-1, -1] == pytest.approx(5.0)
    np.testing.assert_array_equal(cam.upsample_map(np.full((7, 7), 2.0), (14, 14), normalize=True), 0.0)


def test_colorize_is_rgb_jet():
    colours = cam.colorize(np.array([[0.0, 1.0]]))
    blue, red = colours[0, 0], colours[0, 1]
    assert blue[2] > 100 and blue[0] == 0  # JET low end is blue (in RGB order, not OpenCV's BGR)
    assert red[0] > 100 and red[2] == 0


def test_overlay_attention_red_at_peak_blue_elsewhere():
    frame = np.full((64, 96, 3), 128, np.uint8)
    attention = np.zeros((2, 3), np.float32)
    attention[1, 2] = 1.0
    out = cam.overlay_attention(frame, attention, alpha=0.5)
    assert out.shape == frame.shape and out.dtype == np.uint8
    peak, low = out[60, 92].astype(int), out[2, 2].astype(int)
    assert peak[0] > peak[2] + 40  # red-ish where the attention peaks
    assert low[2] > low[0] + 40  # blue-ish where it is lowest
    # alpha=0 leaves the frame untouched.
    np.testing.assert_array_equal(cam.overlay_attention(frame, attention, alpha=0.0), frame)


def test_overlay_motion_is_not_rescaled():
    frame = np.zeros((32, 32, 3), np.uint8)
    faint = cam.overlay_motion(frame, np.full((4, 4), 0.1, np.float32), alpha=1.0)
    strong = cam.overlay_motion(frame, np.full((4, 4), 0.9, np.float32), alpha=1.0)
    # A uniform 10% map must look "mostly static" (blue), not be stretched to red like the CAM.
    assert faint[16, 16, 2] > faint[16, 16, 0] and strong[16, 16, 0] > strong[16, 16, 2]


def test_motion_probability():
    logits = np.array([[[0.0, np.log(3.0)], [1000.0, -1000.0]]])  # (1, 2, K=2)
    np.testing.assert_allclose(cam.motion_probability(logits), [[0.75, 0.0]], atol=1e-6)
    np.testing.assert_allclose(cam.motion_probability(np.array([[[0.3]]])), [[0.3]])
    with pytest.raises(ValueError, match="K=1"):
        cam.motion_probability(np.zeros((2, 2, 3)))


def test_cam_grid_layout():
    frames = np.random.default_rng(0).integers(0, 255, (3, 32, 40, 3), np.uint8)
    attention = np.random.default_rng(1).random((3, 2, 2))
    ms = np.zeros((3, 2, 2, 2))
    grid = cam.cam_grid(frames, attention, ms, np.ones((3, 2, 2)))
    assert grid.shape == (4 * 34 - 2, 3 * 42 - 2, 3)
    np.testing.assert_array_equal(grid[:32, 42:82], frames[1])  # row 0 = raw frames (captions only in column 0)
    assert cam.cam_grid(frames, attention).shape == (2 * 34 - 2, 3 * 42 - 2, 3)
    # Enlarged for display (short side 32 -> 64) under a two-line title band.
    titled = cam.cam_grid(frames, attention, title="a\nb", min_size=64)
    assert titled.shape == (2 * 18 + 4 + 2 * 66 - 2, 3 * 82 - 2, 3)
    assert (titled[:40] < 128).any() and (titled[:40] == 255).mean() > 0.8  # dark text on white
    with pytest.raises(ValueError, match="uint8"):
        cam.cam_grid(frames.astype(np.float32), attention)
