"""Frames from videos and frame folders: frame-exact at any frame rate, in order, resized, bad input named."""

from fractions import Fraction

import cv2
import numpy as np
import pytest

from ego_jax.data import video

T, H, W = 30, 48, 64


def _indexed_frames(t=T):
    """Frame i is flat grey 8 * i + 4 with a little texture, so decoding can tell every index apart."""
    rng = np.random.default_rng(0)
    frames = np.repeat((np.arange(t) * 8 + 4).astype(np.uint8)[:, None, None, None], H * W * 3, 1).reshape(t, H, W, 3)
    return frames + rng.integers(0, 3, frames.shape, dtype=np.uint8)


def _indices(frames):
    return np.rint((frames.reshape(len(frames), -1).mean(1) - 5) / 8).astype(int)


@pytest.mark.parametrize("name,fps", [("a.mp4", Fraction(30000, 1001)), ("a.webm", 12), ("a.avi", 25)])
def test_lossy_videos_decode_every_frame_once_in_order(tmp_path, name, fps):
    frames = _indexed_frames()
    path = video.write_video(tmp_path / name, frames, fps=fps)
    out = video.read_frames(path)
    assert out.shape == frames.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(_indices(out), np.arange(T))
    assert np.abs(out.astype(int) - frames).max() <= 8


def test_lossless_video_round_trips_exactly(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (5, H, W, 3), dtype=np.uint8)
    np.testing.assert_array_equal(video.read_frames(video.write_video(tmp_path / "a.mkv", frames, fps=7)), frames)


def test_frame_folder_in_numeric_order_and_resized(tmp_path):
    frames = _indexed_frames(12)
    for i, f in enumerate(frames):  # frame_1 ... frame_12: frame_10 sorts after frame_9
        cv2.imwrite(str(tmp_path / f"frame_{i + 1}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (tmp_path / ".DS_Store").write_bytes(b"\0Bud1")
    (tmp_path / "notes.txt").write_text("not a frame")
    np.testing.assert_array_equal(video.read_frames(tmp_path), frames)
    small = video.read_frames(tmp_path, short_side=24)
    assert small.shape == (12, 24, 32, 3)
    np.testing.assert_array_equal(_indices(small), np.arange(12))
    assert video.short_side_size(256, 455, 128) == (128, 228) and video.short_side_size(340, 256, 128) == (170, 128)


def test_bad_inputs_are_named(tmp_path):
    good = video.write_video(tmp_path / "good.mp4", _indexed_frames(4), fps=10)
    (tmp_path / "truncated.mp4").write_bytes(good.read_bytes()[:300])
    (tmp_path / "text.avi").write_text("not a video")
    for name in ("truncated.mp4", "text.avi", "missing.mp4"):
        with pytest.raises(video.VideoError, match=name):
            video.read_frames(tmp_path / name)
    (tmp_path / "empty").mkdir()
    with pytest.raises(video.VideoError, match="no frames in .*empty"):
        video.read_frames(tmp_path / "empty")
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "image_00001.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "frames" / "image_00002.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(video.VideoError, match="image_00002.png"):
        video.read_frames(tmp_path / "frames")
    with pytest.raises(video.VideoError, match="not a video file"):
        video.read_frames(tmp_path / "frames" / "image_00001.png")
