"""EGTEA Gaze+'s action annotations: class indices, split lists and clip names.

Formats, as read by the dataset author's and the Ego-RNN/LSTA authors' code:
- `action_annotation/action_idx.txt`, `verb_idx.txt`, `noun_idx.txt`: one class a line, `<name> <index>`, the name
  possibly with spaces, the index 1-based and the last token (Yin Li's load_ant_egtea: label = int(tokens[-1]) - 1,
  name = ' '.join(tokens[:-1]); mmaction-style loaders do the same). 106 actions, 19 verbs, 51 nouns (EGTEA paper).
- `train_split{1,2,3}.txt`, `test_split{1,2,3}.txt`: one clip a line, `<clip> <action> <verb> <noun>`, ids 1-based
  (swathikirans/LSTA gen_splits.py: label = int(column 2) - 1 for RGB/two-stream, column 3 for its flow-action
  variant; load_ant_egtea reads columns 1-2 the same way).
- Clip names `<participant>-<recipe session>-<recipe>-<start ms>-<end ms>-F<first frame>-F<last frame>`, e.g.
  P21-R04-ContinentalBreakfast-291175-294945-F006979-F007088, in `cropped_clips/<session>/<clip>.mp4` with session
  = the first three fields (LaViLa datasets/README.md; MichiganCOG/Gaze-Attention's split files).
"""

import re
from pathlib import Path

from ego_jax.data.manual_dir import AnnotationError

SPLITS = (1, 2, 3)
COUNTS = {"action": 106, "verb": 19, "noun": 51}
CLIP_NAME = re.compile(r"(P\d+)-(R\d+)-([A-Za-z0-9]+)-(\d+)-(\d+)-F(\d+)-F(\d+)")


def read_index(path: Path) -> list[str]:
    """Class names of an index file, position = index - 1; every index 1..N exactly once."""
    if not path.is_file():
        raise AnnotationError(f"missing {path}: expected EGTEA's action_annotation/{path.name} (lines '<name> <id>')")
    names = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 2 or not tokens[-1].isdigit():
            raise AnnotationError(f"{path}:{n}: expected '<class name> <1-based index>', got {line!r}")
        k = int(tokens[-1])
        if k in names:
            raise AnnotationError(f"{path}:{n}: index {k} given twice ({names[k]!r} and {' '.join(tokens[:-1])!r})")
        names[k] = " ".join(tokens[:-1])
    if sorted(names) != list(range(1, len(names) + 1)):
        raise AnnotationError(f"{path}: indices must be 1..{len(names)} without gaps, got {sorted(names)[:5]} ...")
    return [names[k] for k in range(1, len(names) + 1)]


def read_split(path: Path, counts: dict[str, int]) -> list[tuple[str, int, int, int]]:
    """(clip, action, verb, noun) per line, ids 0-based, checked against the class counts."""
    if not path.is_file():
        raise AnnotationError(
            f"missing {path}: expected EGTEA's action_annotation/{path.name} (lines '<clip> <action> <verb> <noun>')"
        )
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 4 or not all(t.isdigit() for t in tokens[1:]):
            raise AnnotationError(f"{path}:{n}: expected '<clip> <action> <verb> <noun>' (1-based ids), got {line!r}")
        if not CLIP_NAME.fullmatch(tokens[0]):
            raise AnnotationError(
                f"{path}:{n}: clip name {tokens[0]!r} is not like "
                "P21-R04-ContinentalBreakfast-291175-294945-F006979-F007088"
            )
        ids = [int(t) - 1 for t in tokens[1:]]
        for field, k in zip(("action", "verb", "noun"), ids):
            if not 0 <= k < counts[field]:
                raise AnnotationError(f"{path}:{n}: {field} id {k + 1} outside 1..{counts[field]} ({field}_idx.txt)")
        rows.append((tokens[0], *ids))
    return rows


def session(clip: str) -> str:
    """'P21-R04-ContinentalBreakfast-291175-...' -> 'P21-R04-ContinentalBreakfast' (its cropped_clips folder)."""
    return "-".join(CLIP_NAME.fullmatch(clip).groups()[:3])


def participant(clip: str) -> str:
    return CLIP_NAME.fullmatch(clip).group(1)
