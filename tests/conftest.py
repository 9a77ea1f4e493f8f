"""Test-wide setup: 4 CPU devices for the sharding tests, quiet TensorFlow, and the generated datasets shared by the
tests (built once per session)."""

import os
import runpy
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_platforms", "cpu")


@pytest.fixture(scope="session")
def synthetic_gtea61(tmp_path_factory):
    """classes -> data_dir of a generated GTEA61-layout set (ego_jax.data.synthetic preset 'tiny', one clip per class
    and subject S1..S4), built with tfds config 'all' into <tmp>/tfds beside its <tmp>/manual; once per class list."""
    built = {}

    def make(classes) -> str:
        from ego_jax.data import gtea61, synthetic  # noqa: PLC0415  (tfds: only in the tests that build data)

        if tuple(classes) not in built:
            tmp = tmp_path_factory.mktemp("gtea61")
            synthetic.make_synthetic(tmp / "manual", preset="tiny", classes=list(classes), clips_per_class=1, workers=1)
            gtea61.build(manual_dir=tmp / "manual", data_dir=tmp / "tfds", config="all")
            built[tuple(classes)] = str(tmp / "tfds")
        return built[tuple(classes)]

    return make


@pytest.fixture(scope="session")
def data_dir(synthetic_gtea61):
    """The training tests' set: 4 classes x 4 subjects: train S1+S3+S4 = 12 clips (3 steps of 4), test S2 = 4 clips."""
    from ego_jax.data.gtea61 import CLASSES  # noqa: PLC0415

    return synthetic_gtea61(CLASSES[:4])


# The stand-in releases the dataset tests build (ego_jax.data.standins), each with its quirks: EGTEA with a clip not
# downloaded, stray files and two clips of 1-4 frames; GTEA71 and GTEA Gaze+ (all six subjects, so every protocol
# split trains) with a 1-4 frame clip.
STANDINS = {
    "egtea": dict(missing=1, stray=True, short_clips=2),
    "gtea71": dict(short_clips=1),
    "gtea_gaze": dict(short_clips=1, subjects=("Ahmad", "Alireza", "Carlos", "Rahul", "Shaghayegh", "Yin")),
}


@pytest.fixture(scope="session")
def standin_build(tmp_path_factory):
    """name -> (StandIn, data_dir): the stand-in release of `name` built by scripts/build_dataset.py, once."""
    built, root = {}, Path(__file__).parents[1]

    def make(name: str):
        from ego_jax.data import standins  # noqa: PLC0415  (tfds: only in the tests that build data)

        if name not in built:
            tmp = tmp_path_factory.mktemp(name)
            stand_in = standins.MAKERS[name](tmp / "manual", **STANDINS[name])
            build = runpy.run_path(str(root / "scripts" / "build_dataset.py"))["main"]
            build(["--dataset", name, "--manual_dir", str(tmp / "manual"), "--data_dir", str(tmp / "tfds")])
            built[name] = stand_in, str(tmp / "tfds")
        return built[name]

    return make
