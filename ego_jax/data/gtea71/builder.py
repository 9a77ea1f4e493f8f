"""tfds builder `gtea71`: GTEA's videos cut by its label files into 71 classes (see __init__), one split per subject.

Manual folder: labels/<S>_<recipe>_<C>.txt (e.g. S1_Cheese_C1.txt, the naming prepareGTEA61Dataset.py reads:
subject = the first two characters) and the videos <S>_<recipe>_<C>.<mp4|avi|...> anywhere under it; optional
frames/flow already extracted per clip (release.py). Clip ids: <video>/<first>-<last>.
"""

import re

import tensorflow_datasets as tfds

from ego_jax.data import release
from ego_jax.data.gtea_labels import GteaLabelsBuilder
from ego_jax.data.manual_dir import AnnotationError

SUBJECTS = ("S1", "S2", "S3", "S4")
EXCLUDED = {("stir", ("cup",)), ("put", ("tea",))}  # 1 and 2 occurrences in the release (hassony2's loader)


class Gtea71(GteaLabelsBuilder):
    """GTEA, 71 actions (verb + objects), 4 subjects, RGB and warp flow."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Clips cut from the videos by the label files; frame-level records."}
    BUILDER_CONFIGS = release.builder_configs()
    NUM_CLASSES = 71
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download GTEA (videos and labels) by hand and point --manual_dir at the folder holding labels/.
    """

    def _subject(self, stem):
        m = re.match(r"(S\d)_", stem)
        return m.group(1) if m and m.group(1) in SUBJECTS else None

    def _class(self, verb, objects):
        return None if (verb, objects) in EXCLUDED else f"{verb}_{','.join(objects)}"

    def _class_list(self, found):
        if len(found) > self.NUM_CLASSES:
            raise AnnotationError(
                f"the label files hold {len(found)} classes, more than GTEA71's "
                f"{self.NUM_CLASSES}: {sorted(found)[:5]} ..."
            )
        return sorted(found)
