"""What one example of a loader holds (`ClipSpec`), apart from the loader itself.

Kept free of grain and tfds, so the step benchmark (and an accelerator host without them) can shape batches.
"""

import dataclasses

import numpy as np

from ego_jax.data import transforms

LOADERS = ("rgb", "flow", "two_stream")  # what an example holds: RGB frames, flow stacks, or both


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """What one example of a loader holds; `shapes()` gives its per-example shapes and dtypes."""

    loader: str  # one of LOADERS
    train: bool
    frames: int = 16
    stack: int = 5
    crop: int = 224
    resize: int = 256
    ms_grid: tuple[int, int] | None = None
    ms_threshold: float | None = None
    eval_stacks: int = 1
    method: str = "pil"
    rgb_endpoint: bool = False  # RGB frames at floor(linspace(1, N, T, endpoint)): Ego-RNN False, LSTA True

    def __post_init__(self):
        if self.loader not in LOADERS:
            raise ValueError(f"unknown loader {self.loader!r}; expected one of {LOADERS}")
        if self.ms_grid is not None and self.loader == "flow":
            raise ValueError("ms_grid (motion-map targets) needs RGB frames; use loader='rgb' or 'two_stream'")
        if self.ms_threshold is not None and self.ms_grid is None:
            raise ValueError("ms_threshold is set but ms_grid is None; give the feature grid, e.g. ms_grid=(7, 7)")
        sizes = dict(
            frames=self.frames, stack=self.stack, crop=self.crop, resize=self.resize, eval_stacks=self.eval_stacks
        )
        bad = {k: v for k, v in sizes.items() if not (isinstance(v, (int, np.integer)) and v >= 1)}
        if bad:
            raise ValueError(f"{bad}: these loader sizes must be integers >= 1")
        if self.ms_grid is not None and not (len(self.ms_grid) == 2 and min(self.ms_grid) >= 1):
            raise ValueError(f"ms_grid must be the feature grid (h, w), e.g. (7, 7) for 224 crops; got {self.ms_grid}")
        if self.method not in transforms.METHODS:
            raise ValueError(f"unknown resize method {self.method!r}; expected one of {transforms.METHODS}")

    @property
    def uses_rgb(self) -> bool:
        return self.loader != "flow"

    @property
    def uses_flow(self) -> bool:
        return self.loader != "rgb"

    def shapes(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Per-example {key: (shape, dtype)} of the batch keys."""
        s = self.crop
        out = {"label": ((), np.int32), "mask": ((), np.bool_), "index": ((), np.int32)}
        if self.uses_rgb:
            out["rgb"] = ((self.frames, s, s, 3), np.uint8)
        if self.uses_flow:
            stacks = () if self.train or self.eval_stacks == 1 else (self.eval_stacks,)
            out["flow"] = (stacks + (s, s, 2 * self.stack), np.uint8)
        if self.ms_grid is not None:
            out["ms_target"] = ((self.frames, *self.ms_grid), np.float32)
        return out

    def padding(self) -> dict[str, np.ndarray]:
        """A padding example: zeros, mask False, index -1."""
        out = {k: np.zeros(shape, dtype) for k, (shape, dtype) in self.shapes().items()}
        out["index"] = np.int32(-1)
        return out


def features(loader: str, *, motion_maps: bool = False) -> tuple[str, ...]:
    """Dataset features `loader` reads (motion_maps: the MS targets too), e.g. ('flow_x', 'flow_y')."""
    if loader not in LOADERS:
        raise ValueError(f"unknown loader {loader!r}; expected one of {LOADERS}")
    rgb = ("rgb", "mmaps") if motion_maps else ("rgb",)
    return (rgb if loader != "flow" else ()) + (("flow_x", "flow_y") if loader != "rgb" else ())
