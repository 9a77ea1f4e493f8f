"""scripts/concept_figures.py on a tiny synthetic set with an untrained tiny model: every figure is written, its rows
of tiles at the asked size, from the clip it was asked for (the grid layout itself: test_charts)."""

import os

import cv2
import pytest
from test_train_e2e import ROOT, run_script

from ego_jax.data import gtea61

SIZE, FRAMES, STACK = 60, 3, 2


@pytest.fixture(scope="module")
def data_dir(synthetic_gtea61):
    """4 clips of one class, one per subject (the test split S2 holds one)."""
    return synthetic_gtea61(gtea61.CLASSES[:1])


def run(data_dir, out, *extra):
    return run_script(
        "concept_figures.py",
        f"--config={os.path.join(ROOT, 'configs', 'quickstart.py')}",
        f"--out={out}",
        f"--size={SIZE}",
        f"--config.data.data_dir={data_dir}",
        "--config.data.crop=64",
        "--config.data.resize=72",
        f"--config.data.frames={FRAMES}",
        f"--config.data.stack={STACK}",
        "--config.model.width=4",
        *extra,
    )


def test_writes_every_figure(data_dir, tmp_path):
    proc = run(data_dir, tmp_path, f"--clip=S2/{gtea61.CLASSES[0]}/1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = {
        name: cv2.imread(str(tmp_path / name))
        for name in ("rgb_flow.png", "optical_vs_warp.png", "cam.png", "convlstm.png", "ms_target.png")
    }
    assert all(image is not None for image in images.values()), sorted(os.listdir(tmp_path))
    assert proc.stdout.split() == [str(tmp_path / name) for name in images]
    # Rows of tiles (SIZE px short side) under each other: the height grows with the rows.
    rows = {"rgb_flow.png": 3, "optical_vs_warp.png": 4, "cam.png": 2, "convlstm.png": 2, "ms_target.png": 3}
    for name, image in images.items():
        assert image.shape[0] >= rows[name] * SIZE and image.shape[1] >= FRAMES * SIZE, (name, image.shape)


def test_clear_error_for_a_flow_stage(data_dir, tmp_path):
    """(--clip goes through experiments.cam.find_clip, whose errors test_evaluate_e2e checks.)"""
    proc = run(data_dir, tmp_path, "--stage=flow")
    assert proc.returncode != 0 and "not an Ego-RNN RGB or two_stream stage" in proc.stderr
