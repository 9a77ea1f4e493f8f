"""Your own labelled videos as a dataset: a folder of class-named video folders or mmaction2 video lists (layout.py),
built into frames and warp flow like the releases, to fine-tune a trained model on.

  python scripts/build_dataset.py --dataset folder --manual_dir my_videos --data_dir data/tfds_folder
  python scripts/train.py --config configs/two_stream.py:data=folder,init=W --workdir W_mine \\
      --config.data.data_dir=data/tfds_folder

Splits of a build: `train` and `test`. Class names: classes.json in the build folder (label = position). Flow:
ego_jax.data.flow at build time (release.py), 256 px short side by default (GTEA61's frames).
"""

import json
from pathlib import Path

from ego_jax.data import release
from ego_jax.data.folder.builder import SPLIT_FILE, Folder
from ego_jax.data.folder.layout import SPLITS

NAME = "folder"
CONFIGS, DEFAULT_CONFIG = release.CONFIGS, "rgb_flow"
DEFAULT_MANUAL_DIR = "data/manual/folder"
DEFAULT_DATA_DIR = "data/tfds_folder"
_RELEASE = release.SubjectRelease(NAME, Folder, SPLITS, DEFAULT_MANUAL_DIR)
load_source, clip_ids, class_names = _RELEASE.load_source, _RELEASE.clip_ids, _RELEASE.class_names


def build(
    *,
    manual_dir=DEFAULT_MANUAL_DIR,
    data_dir=DEFAULT_DATA_DIR,
    config: str = DEFAULT_CONFIG,
    extract_dir=None,
    flow_spec=None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Folder:
    """Builds folder/<config> from your folder `manual_dir` into `data_dir` (no-op if already built with the same
    split; another split of an existing build is refused: build into a new data_dir). flow_spec: how flow is
    computed (ego_jax.data.flow.FlowSpec; default release.py's)."""
    builder = Folder(
        config=config,
        data_dir=str(data_dir),
        extract_dir=extract_dir,
        flow_spec=flow_spec,
        test_fraction=test_fraction,
        seed=seed,
    )
    if builder.is_prepared():
        recorded = json.loads((Path(builder.data_dir) / SPLIT_FILE).read_text())
        asked = {"test_fraction": test_fraction, "seed": seed}
        if recorded["layout"] == "class folders" and {k: recorded[k] for k in asked} != asked:
            raise ValueError(
                f"folder/{config} in {data_dir} was built with {recorded}, not {asked}: build into "
                "another --data_dir (or delete that build)"
            )
    return release.build(builder, manual_dir)
