"""tfds builder `gtea_gaze`: GTEA Gaze+'s videos cut by its label files into the 44 classes, one split per subject.

Manual folder: labels_cleaned/ (or labels/) with <Subject>_<Recipe>.txt (hassony2's loader: subjects Ahmad,
Alireza, Carlos, Rahul, Shaghayegh, Yin; recipe = the text after the last '_'), the videos <Subject>_<Recipe>.avi
(or .mp4 ...) anywhere under it (hassony2: avi_files/); optional frames/flow already extracted per clip
(release.py). Actions outside the 44 classes are skipped. Clip ids: <video>/<first>-<last>.
"""

import tensorflow_datasets as tfds

from ego_jax.data import release
from ego_jax.data.gtea_gaze.classes import CLASSES, class_of
from ego_jax.data.gtea_labels import GteaLabelsBuilder

SUBJECTS = ("Ahmad", "Alireza", "Carlos", "Rahul", "Shaghayegh", "Yin")


class GteaGaze(GteaLabelsBuilder):
    """GTEA Gaze+, 44 actions, 6 subjects, RGB and warp flow."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Clips cut from the videos by the label files; frame-level records."}
    BUILDER_CONFIGS = release.builder_configs()
    LABEL_FOLDERS = ("labels_cleaned", "labels")
    NUM_CLASSES = len(CLASSES)
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download GTEA Gaze+ (videos and labels) by hand and point --manual_dir at the folder holding labels_cleaned/.
    """

    def _subject(self, stem):
        subject = stem.split("_", 1)[0]
        return subject if subject in SUBJECTS else None

    def _class(self, verb, objects):
        cls = class_of(verb, objects)
        return cls if cls in CLASSES else None

    def _class_list(self, found):
        return list(CLASSES)
