"""scripts/concept_figures.py on a tiny synthetic set with an untrained tiny model: every figure is written, laid out
as documented (rows x one tile per frame), from the clip it was asked for."""
import os
import subprocess
import sys

import cv2
import pytest

from ego_jax.data import gtea61, synthetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, PAD, FRAMES, STACK = 40, 2, 3, 2


@pytest.fixture(scope="module")
def data_dir(synthetic_gtea61):
    """4 clips of one class, one per subject (the test split S2 holds one)."""
    return synthetic_gtea61(gtea61.CLASSES[:1])


def run(data_dir, out, *extra):
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "concept_figures.py"),
           f"--config={os.path.join(ROOT, 'configs', 'quickstart.py')}", f"--out={out}", f"--size={SIZE}",
           f"--config.data.data_dir={data_dir}", "--config.data.crop=64", "--config.data.resize=72",
           f"--config.data.frames={FRAMES}", f"--config.data.stack={STACK}", "--config.model.width=4", *extra]
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def grid_shape(rows, columns, aspect):
    """Shape of cam.image_grid of rows x columns tiles whose short side is SIZE (aspect = width / height >= 1)."""
    return rows * (SIZE + PAD) - PAD, columns * (round(SIZE * aspect) + PAD) - PAD, 3


def test_writes_every_figure(data_dir, tmp_path):
    proc = run(data_dir, tmp_path, f"--clip=S2/{gtea61.CLASSES[0]}/1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = {name: cv2.imread(str(tmp_path / name)) for name in
              ("rgb_flow.png", "optical_vs_warp.png", "cam.png", "convlstm.png", "ms_target.png")}
    assert all(image is not None for image in images.values()), sorted(os.listdir(tmp_path))
    assert proc.stdout.split() == [str(tmp_path / name) for name in images]
    raw = synthetic.PRESETS["tiny"]["size"]  # the stored frames (H, W): RGB and flow figures show them uncropped
    assert images["rgb_flow.png"].shape == grid_shape(3, STACK, raw[1] / raw[0])
    assert images["optical_vs_warp.png"].shape[0] == grid_shape(4, 1, 1)[0]
    assert images["cam.png"].shape == grid_shape(2, FRAMES, 1)  # the model's square crops
    assert images["convlstm.png"].shape == grid_shape(2, FRAMES, 1)
    assert images["ms_target.png"].shape == grid_shape(3, FRAMES, 1)  # the quickstart model has no MS head


def test_clear_error_for_a_flow_stage(data_dir, tmp_path):
    """(--clip goes through experiments.cam.find_clip, whose errors test_evaluate_e2e checks.)"""
    proc = run(data_dir, tmp_path, "--stage=flow")
    assert proc.returncode != 0 and "not an Ego-RNN RGB or two_stream stage" in proc.stderr
