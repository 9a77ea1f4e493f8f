"""TV-L1 (jax vs OpenCV vs the truth), warp flow and dense_flow's quantisation, on real photographs moved by known
motions (ego_jax/data/flow/scenes.py): GTEA61's rgb0011.png (tests/data) and matplotlib's grace_hopper.jpg.

The images are small and the TV-L1 budget short (3 levels, 3 warps, 50 iterations) so that the jax backend
compiles once for every test here; both backends run the same parameters. `pytest -s` prints the EPE table.
"""

from pathlib import Path

import cv2
import jax
import matplotlib.cbook
import numpy as np
import pytest

from ego_jax.data import flow
from ego_jax.data.flow import scenes, tvl1

DATA = Path(__file__).parent / "data" / "gtea61_sample"
SIZE = (64, 96)
PARAMS = flow.TVL1(nscales=3, warps=3, inner_iterations=50)


def _photos():
    gtea = cv2.imread(str(DATA / "rgb0011.png"), cv2.IMREAD_GRAYSCALE)
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_GRAYSCALE)
    return gtea, hopper


@pytest.fixture(scope="module")
def scene_flows():
    """Each scene (GTEA61 background, Grace Hopper as the moving object) with both backends' TV-L1."""
    gtea, hopper = _photos()
    found = scenes.known_motion_scenes(gtea, hopper, SIZE)
    prev, next_ = np.stack([s.prev for s in found]), np.stack([s.next_ for s in found])
    return found, {b: flow.optical_flow(prev, next_, backend=b, params=PARAMS, batch=4) for b in flow.BACKENDS}


def test_jax_tvl1_is_as_accurate_as_opencv_and_agrees_with_it(scene_flows):
    found, flows = scene_flows
    print(f"\n{'scene':14s} {'EPE opencv':>10s} {'EPE jax':>8s} {'jax vs opencv':>13s}  (px, {SIZE[0]}x{SIZE[1]})")
    for i, s in enumerate(found):
        cv_epe, jax_epe = (scenes.epe(flows[b][i], s.flow, s.valid) for b in ("opencv", "jax"))
        between = scenes.epe(flows["jax"][i], flows["opencv"][i], s.valid)
        print(f"{s.name:14s} {cv_epe:10.3f} {jax_epe:8.3f} {between:13.4f}")
        assert cv_epe < 0.5, f"{s.name}: OpenCV itself misses the known motion"
        assert jax_epe <= max(1.1 * cv_epe, cv_epe + 0.05), s.name
        assert between < 0.05, s.name


def test_warp_flow_removes_the_camera_and_keeps_the_object(scene_flows):
    found, flows = scene_flows
    s = next(s for s in found if s.name == "camera+object")
    camera, own = s.camera[:2, 2], np.asarray(s.own)
    optical = flows["opencv"][found.index(s)]
    assert np.abs(optical[s.background].mean(0) - camera).max() < 0.3  # optical flow: the camera's motion
    i = found.index(s)
    for backend in flow.BACKENDS:  # all scenes, so that the jax backend reuses the program compiled above
        warped, cameras = flow.warp_flow(
            np.stack([s.prev for s in found]),
            np.stack([s.next_ for s in found]),
            backend=backend,
            params=PARAMS,
            batch=4,
            quirks=False,
        )
        assert cameras[i].used, (backend, cameras[i])
        background = np.linalg.norm(warped[i][s.background], axis=-1).mean()
        obj = np.median(warped[i][s.obj], 0)
        print(f"\n{backend}: warp flow background mean |v| {background:.3f} px, object {obj} px (own {own})")
        assert background < 0.5
        assert np.abs(obj - own).max() < 1.0


def test_warp_flow_quirks_and_their_fix_under_rotation():
    """dense_flow samples the flow's y at column y; under rotation that leaves camera motion in the warp flow."""
    gtea, _ = _photos()
    s = scenes.scene(
        "rotation", cv2.resize(gtea, (128, 96), interpolation=cv2.INTER_AREA), scenes._rotation(0.04, 96, 128)
    )
    residual = {}
    for quirks in (True, False):
        warped, _ = flow.warp_flow(s.prev[None], s.next_[None], params=PARAMS, quirks=quirks)
        residual[quirks] = np.linalg.norm(warped[0][s.background], axis=-1).mean()
    assert residual[False] < 0.1 < residual[True], residual


def test_too_few_matches_leave_the_identity():
    flat = np.full((64, 96), 128, np.uint8)
    camera = flow.camera_motion(flat, flat, np.zeros((64, 96, 2), np.float32))
    assert not camera.used and np.array_equal(camera.homography, np.eye(3))


def test_remove_camera_uses_the_first_frame_near_the_border():
    rng = np.random.default_rng(0)
    prev, next_ = (rng.integers(0, 256, (40, 50), dtype=np.uint8) for _ in range(2))
    shift = np.array([[1, 0, 2.0], [0, 1, 0], [0, 0, 1]])
    out = flow.remove_camera(prev, next_, shift)
    np.testing.assert_array_equal(out[10:30, 10:40], next_[10:30, 12:42])  # next_(x + 2)
    np.testing.assert_array_equal(out[:6], prev[:6])  # y <= 5: within dense_flow's 5 px margin
    np.testing.assert_array_equal(out[:, 42:], prev[:, 42:])  # x + 2 >= 50 - 1 - 5


def test_building_blocks_match_opencv():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (37, 53)).astype(np.float32)
    down = cv2.resize(a, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(tvl1.resize(a, down.shape, (1.25, 1.25)), down, atol=1e-3)
    np.testing.assert_allclose(tvl1.resize(down, a.shape), cv2.resize(down, a.shape[::-1]), atol=1e-3)
    assert tvl1.pyramid_sizes(256, 340, flow.TVL1()) == [(256, 340), (205, 272), (164, 218), (131, 174), (105, 139)]
    assert tvl1.pyramid_sizes(48, 64, flow.TVL1()) == [(48, 64), (38, 51), (30, 41), (24, 33), (19, 26)]
    assert len(tvl1.pyramid_sizes(20, 64, flow.TVL1())) == 2  # 16 x 51, then 13 rows: stop
    x, y = np.meshgrid(np.arange(53, dtype=np.float32), np.arange(37, dtype=np.float32))
    x, y = x + rng.uniform(-3, 3, x.shape).astype(np.float32), y + rng.uniform(-3, 3, y.shape).astype(np.float32)
    np.testing.assert_allclose(
        jax.jit(tvl1._remap_cubic)(a[None], x, y)[0], cv2.remap(a, x, y, cv2.INTER_CUBIC), atol=2e-3
    )
    u = rng.normal(size=(37, 53)).astype(np.float32)
    for k in (3, 5):
        np.testing.assert_array_equal(jax.jit(tvl1._median, static_argnums=1)(u, k), cv2.medianBlur(u, k))


def test_quantisation_is_dense_flows():
    bound = 20
    v = np.array([-25, -20, -19.95, -0.1, 0, 0.0784, 0.08, 1, 19.9, 20, 20.01], np.float32)
    # 255 * (v + 20) / 40 = [<0, 0, 0.32, 126.86, 127.5, 127.9998, 128.01, 133.875, 254.36, 255, >255]
    np.testing.assert_array_equal(flow.quantise(v, bound), [0, 0, 0, 127, 128, 128, 128, 134, 254, 255, 255])
    levels = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(flow.quantise(flow.dequantise(levels, bound), bound), levels)
    w = np.linspace(-bound, bound, 10001, dtype=np.float32)
    assert np.abs(flow.dequantise(flow.quantise(w, bound), bound) - w).max() <= bound / 255 + 1e-5
    assert flow.quantise(np.float32([2.0]), 15)[0] == 144  # 255 * 17 / 30 = 144.5: cvRound goes to the even 144


def test_flow_images_read_back_as_the_authors(tmp_path):
    """A quantised field written as the authors' JPEG decodes within JPEG's error, as GTEA61's flow files do."""
    field = np.linspace(-3, 3, 64 * 96, dtype=np.float32).reshape(64, 96)
    path = tmp_path / "flow_x_00001.jpg"
    path.write_bytes(flow.encode_image(flow.quantise(field), ".jpg"))
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8 and back.ndim == 2
    assert np.abs(flow.dequantise(back) - field).max() < 0.6
