"""GTEA with 71 action classes: the 28 videos of 4 subjects (S1-S4) cut by their label files.

  python scripts/build_dataset.py --dataset gtea71 --manual_dir data/manual/GTEA --data_dir data/tfds

Classes: every (verb, objects) pair of the label files, named like GTEA61's (`pour_mustard,hotdog,bread`), except
stir<cup> and put<tea>, which occur only once and twice: 71 classes (hassony2's GTEA loader, which cites Li et al.,
"Delving into egocentric actions", CVPR 2015, for the 71; the Ego-RNN scripts' num_classes 71). Labels are the
positions in the sorted class list of the release's label files (written to the build's classes.json); a partial
download with fewer classes numbers them differently. Splits: one per subject; split k tests S_k and trains on the
others (the GTEA61 protocol); the suites' protocol=4fold averages the four. Published Ego-RNN two-stream: 77.0
(the paper's Table; also listed for arXiv 1807.11794 on wizwand.com).
"""

from ego_jax.data import release
from ego_jax.data.gtea71.builder import SUBJECTS, Gtea71
from ego_jax.data.release import SubjectRelease

NAME = "gtea71"
NUM_CLASSES = 71
DEFAULT_MANUAL_DIR = "data/manual/GTEA"
PUBLISHED = {"two_stream": {"mean": 77.0}}
_RELEASE = SubjectRelease(NAME, Gtea71, SUBJECTS, DEFAULT_MANUAL_DIR)
CONFIGS, DEFAULT_CONFIG = release.CONFIGS, "rgb_flow"
build, load_source = _RELEASE.build, _RELEASE.load_source
clip_ids, class_names = _RELEASE.clip_ids, _RELEASE.class_names
