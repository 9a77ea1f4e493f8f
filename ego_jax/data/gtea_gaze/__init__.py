"""GTEA Gaze+ with the 44 action classes of Li, Fathi & Rehg's CVPR 2015 evaluation: 6 subjects, 7 recipes.

  python scripts/build_dataset.py --dataset gtea_gaze --manual_dir data/manual/GTEA_Gaze_Plus --data_dir data/tfds

Classes (classes.py): the 44 'CVPR labels' as hassony2's GTEA Gaze+ loader lists them, with its object merging
(fork/knife/spoon -> spoonForkKnife, cup/plate/bowl -> cupPlateBowl; verb spaces removed); Ego-RNN's scripts use
44 classes for gtea_gaze. Splits: one per subject (Ahmad, Alireza, Carlos, Rahul, Shaghayegh, Yin); split k tests
subject k and trains on the others (leave-one-subject-out, the suites' protocol=loso averages the six). ego_jax's
reading of the papers, stated as such: neither Ego-RNN's code nor its README gives the GTEA Gaze+ protocol.
Published Ego-RNN number: not included (not found in a source that could be checked here).
"""

from ego_jax.data import release
from ego_jax.data.gtea_gaze.builder import SUBJECTS, GteaGaze
from ego_jax.data.gtea_gaze.classes import CLASSES
from ego_jax.data.release import SubjectRelease

NAME = "gtea_gaze"
NUM_CLASSES = len(CLASSES)
DEFAULT_MANUAL_DIR = "data/manual/GTEA_Gaze_Plus"
PUBLISHED: dict = {}
_RELEASE = SubjectRelease(NAME, GteaGaze, SUBJECTS, DEFAULT_MANUAL_DIR)
CONFIGS, DEFAULT_CONFIG = release.CONFIGS, "rgb_flow"
build, load_source = _RELEASE.build, _RELEASE.load_source
clip_ids, class_names = _RELEASE.clip_ids, _RELEASE.class_names
