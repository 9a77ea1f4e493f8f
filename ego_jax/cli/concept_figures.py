"""The pictures of docs/concepts.md, drawn from one test clip of a built dataset and (optionally) a trained RGB stage
(installed as ego-jax-concept-figures; from a checkout: python scripts/concept_figures.py).

  ego-jax-concept-figures --config configs/quickstart.py --workdir W --out docs/figures \\
      --config.data.data_dir=... [--stage rgb_stage2] [--clip S2/take_jam/1]

Without --workdir the model is freshly initialised (its maps are then meaningless: a smoke run).
Writes to --out:
  rgb_flow.png         the RGB frames of one flow stack and their x / y warp flow as stored (grey 128 = still):
                       the 2*stack channels the flow network reads, interleaved x1 y1 x2 y2 ...
  optical_vs_warp.png  TV-L1 optical flow of consecutive RGB frames while the head turns (the second frame moved by
                       a pan of --pan px and a --roll degree rotation, since the synthetic camera only shakes by
                       about half a pixel), the warp flow of the same frames (TV-L1 after the RANSAC homography
                       removed the camera's motion, ego_jax.data.flow as dense_flow), and the dataset's warp flow;
                       magnitudes in px on one colour scale
  cam.png              the frames the RGB model sees and its CAM attention on each
  convlstm.png         the mean |c_t| of the ConvLSTM cell state after each frame, and what the classifier
                       would answer from c_t if the clip ended there
  ms_target.png        the motion maps (255 = moving) of the frames, the MS classification target on the feature
                       grid (moving fraction > data.ms_threshold), and the MS head's prediction when it has one
Figures are laid out by matplotlib (ego_jax.viz.charts.image_grid; PNGs with a 128-colour palette to keep them small);
the overlays are image compositing (viz.cam).
"""

import os

import cv2
import numpy as np
from absl import flags, logging
from ml_collections import config_flags

from ego_jax.cli import common

FLAGS = flags.FLAGS


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "experiment config file[:key=value,...]", lock_config=True)
    flags.DEFINE_string("workdir", None, "training workdir of the config (default: an untrained model)")
    flags.DEFINE_string("stage", "rgb_stage2", "RGB (or two_stream) stage whose model draws the model figures")
    flags.DEFINE_string("clip", "0", "clip id of the test split (e.g. S2/take_jam/1) or its index in the split")
    flags.DEFINE_string("out", "docs/figures", "output folder of the PNGs")
    flags.DEFINE_integer("size", 150, "short side (px) of each tile in the figures")
    flags.DEFINE_float("pan", 3.0, "px per frame of the simulated head turn added before the optical flow (0: none)")
    flags.DEFINE_float("roll", 1.0, "degrees per frame of the simulated head roll added with the pan")
    flags.mark_flags_as_required(["config"])


FIGURES = ("rgb_flow.png", "optical_vs_warp.png", "cam.png", "convlstm.png", "ms_target.png")


def _tile(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 -> (size * H / min(H, W), ..., 3) uint8 RGB, bilinear."""
    image = np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image
    zoom = size / min(image.shape[:2])
    return cv2.resize(
        image, (round(image.shape[1] * zoom), round(image.shape[0] * zoom)), interpolation=cv2.INTER_LINEAR
    )


def head_turn(size: tuple[int, int], pan: float, roll: float) -> np.ndarray:
    """The (3, 3) homography of a head that pans (pan, pan / 2) px and rolls `roll` degrees about the centre of
    (H, W) frames: the scene point at x in one frame is at H x in the next."""
    h, w = size
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), roll, 1.0)
    turn[:, 2] += (pan, pan / 2)
    return np.vstack([turn, [0, 0, 1]])


def optical_and_warp_flow(prev_rgb: np.ndarray, next_rgb: np.ndarray, camera: np.ndarray):
    """Two (H, W, 3) uint8 frames, the second first moved by `camera` -> TV-L1 optical flow, warp flow (H, W, 2)
    px and the ego_jax.data.flow.Camera the warp flow removed (dense_flow's parameters, OpenCV backend)."""
    from ego_jax.data import flow  # noqa: PLC0415

    moved = cv2.warpPerspective(next_rgb, camera, next_rgb.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    prev, next_ = (flow.gray(f[None]) for f in (prev_rgb, moved))
    optical = flow.optical_flow(prev, next_)[0]
    warped, cameras = flow.warp_flow(prev, next_)
    return optical, warped[0], cameras[0]


def warp_flow_px(flow_x: np.ndarray, flow_y: np.ndarray) -> np.ndarray:
    """Stored warp flow (H, W) uint8 x / y (128 = 0) -> (H, W, 2) px, with the synthetic release's encoding."""
    from ego_jax.data.synthetic import FLOW_RANGE  # noqa: PLC0415

    scale = FLOW_RANGE * flow_x.shape[1] / 127.0
    return np.stack([(flow_x.astype(np.float32) - 128) * scale, (flow_y.astype(np.float32) - 128) * scale], -1)


def model_maps(model, rgb: np.ndarray, label: int) -> dict:
    """EgoRNN, uint8 clip (T, S, S, 3) -> attention (T,h,w) | None, ms (T,h,w,K) | None, cell (T,h,w) mean |state|
    after each frame, p_true (T,) softmax of the true class from the pooled state after each frame."""
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from ego_jax.models import convlstm  # noqa: PLC0415
    from ego_jax.streams import normalize_rgb  # noqa: PLC0415

    x = normalize_rgb(jnp.asarray(rgb[None]))
    out = model(x)
    feats = model.backbone(x[0])
    # The LSTM's input as EgoRNN builds it: layer4_raw times the (possibly motion-guided) attention, or layer4.
    lstm_in = feats["layer4"] if out["attention"] is None else feats["layer4_raw"] * out["attention"][0][..., None]
    _, (hs, cs) = convlstm(model.lstm, lstm_in[None], return_sequence=True)
    states = (cs if model.pool == "c" else hs)[0]  # (T, h, w, F)
    p_true = jax.nn.softmax(model.classifier(jnp.mean(states, axis=(1, 2))), axis=-1)[:, label]
    return dict(
        attention=None if out["attention"] is None else np.asarray(out["attention"][0]),
        ms=None if out["ms"] is None else np.asarray(out["ms"][0]),
        cell=np.asarray(jnp.mean(jnp.abs(cs[0]), axis=-1)),
        p_true=np.asarray(p_true),
    )


def draw(
    run,
    out: str,
    *,
    workdir: str | None = None,
    stage: str = "rgb_stage2",
    clip: str = "0",
    size: int = 150,
    pan: float = 3.0,
    roll: float = 1.0,
) -> list[str]:
    """Writes FIGURES into `out` for one test clip of `run` (ego_jax.specs.RunSpec) -> their paths."""
    from ego_jax.data import decode, sampling, transforms  # noqa: PLC0415  (heavy imports after flag parsing)
    from ego_jax.data.gtea61.classes import CLASSES  # noqa: PLC0415
    from ego_jax.data.pipeline import load_clip  # noqa: PLC0415
    from ego_jax.experiments.cam import find_clip  # noqa: PLC0415
    from ego_jax.models import EgoRNN, layer4_grid  # noqa: PLC0415
    from ego_jax.train import (
        loaders,  # noqa: PLC0415
        workdir as workdir_lib,  # noqa: PLC0415
    )
    from ego_jax.train.stage import build_model  # noqa: PLC0415
    from ego_jax.viz import cam, charts  # noqa: PLC0415

    d = run.data
    spec = run.stages[stage].model if stage in run.stages else None
    inner = spec.stream.rgb_stream(spec.kwargs) if spec else None  # (attribute holding it, its stream entry)
    if inner is None or not issubclass(inner[1].model, EgoRNN):  # the figures read Ego-RNN's ConvLSTM
        raise ValueError(f"stage {stage!r} of config.recipe {run.recipe} is not an Ego-RNN RGB or two_stream stage")
    if workdir:
        model, _ = workdir_lib.load_stage_model(run, workdir, stage)
    else:
        model = build_model(run, stage)
        model.eval()
    model = model if inner[0] is None else getattr(model, inner[0])
    source = loaders.test_source(run)
    example = source[find_clip(d, d.test_split, clip)]
    label = int(example["label"])
    n = len(example["rgb"])

    def raw(key, i):
        return (decode.decode_rgb if key == "rgb" else decode.decode_gray)(example[key][i], f"{key}[{i}]")

    os.makedirs(out, exist_ok=True)
    paths = []

    def write(name, rows, titles, **kwargs):
        path = os.path.join(out, name)
        charts.save(charts.image_grid(rows, titles, tile=size / charts.DPI, **kwargs), path, colors=128)
        paths.append(path)

    # (a) The flow network's input: one stack of `stack` frames, x and y of each.
    start = sampling.flow_start_test(n, d.stack)
    stack = sampling.stack_indices(np.array(start), n, d.stack)
    write(
        "rgb_flow.png",
        [[_tile(raw(key, i), size) for i in stack] for key in ("rgb", "flow_x", "flow_y")],
        ["RGB", "flow x", "flow y"],
    )

    # (e) Optical flow (camera motion included) vs warp flow (homography removed) vs the dataset's warp flow.
    pairs = stack[stack + 1 < n]
    if not len(pairs):
        raise ValueError(f"clip {clip!r} has {n} frames: optical flow needs two consecutive ones; pick another --clip")
    flows = {"optical flow": [], "warp flow": [], "dataset's": []}
    camera = head_turn(raw("rgb", 0).shape[:2], pan, roll)
    for i in pairs:
        optical, warped, found = optical_and_warp_flow(raw("rgb", i), raw("rgb", i + 1), camera)
        flows["optical flow"].append(optical)
        flows["warp flow"].append(warped)
        flows["dataset's"].append(warp_flow_px(raw("flow_x", i), raw("flow_y", i)))
        moving = raw("mmaps", i) > 0
        logging.info(
            "pair %d: homography from %d matches (%d inliers, used: %s); mean |flow| of the still background "
            "%.2f px optical, %.2f px warp; of the moving item %.2f px optical, %.2f px warp",
            i,
            found.matches,
            found.inliers,
            found.used,
            *(float(np.linalg.norm(f, axis=-1)[m].mean()) for m in (~moving, moving) for f in (optical, warped)),
        )
    peak = max(float(np.linalg.norm(f, axis=-1).max()) for fs in flows.values() for f in fs) or 1.0
    rows = [[raw("rgb", i) for i in pairs]] + [[np.linalg.norm(f, axis=-1) for f in fs] for fs in flows.values()]
    write("optical_vs_warp.png", rows, ["RGB", *flows], colorbar=("flow magnitude (px)", peak))

    # (b, c, d) What the RGB model sees and does with one clip.
    grid = layer4_grid(d.crop, d.crop)
    clip_arrays = load_clip(example, d.clip_spec("rgb", train=False, ms_grid=grid, ms_target="cls"), None)
    frames = [_tile(f, size) for f in clip_arrays["rgb"]]
    maps = model_maps(model, clip_arrays["rgb"], label)
    shape = frames[0].shape[:2]
    if maps["attention"] is not None:
        write(
            "cam.png",
            [frames, [cam.overlay_attention(f, a) for f, a in zip(frames, maps["attention"])]],
            ["frames", "CAM"],
        )
    cell_peak = float(maps["cell"].max()) or 1.0
    cells = [
        cam.blend(f, cam.upsample_map(c / cell_peak, shape, normalize=False)) for f, c in zip(frames, maps["cell"])
    ]
    write(
        "convlstm.png",
        [frames, cells],
        ["frames", "mean |c_t|"],
        captions=[None, [f"p {p:.2f}" for p in maps["p_true"]]],
        title=f"p: the classifier's probability of the true class ({CLASSES[label]}) from c_t",
    )
    spatial = transforms.eval_spatial(*raw("mmaps", 0).shape, resize=d.resize, crop=d.crop)
    mmaps = [
        transforms.apply(raw("mmaps", i), spatial, method=d.resize_method) / 255.0
        for i in sampling.rgb_indices(n, d.frames)
    ]
    rows = [
        frames,
        [cam.overlay_motion(f, m) for f, m in zip(frames, mmaps)],
        [cam.overlay_motion(f, t) for f, t in zip(frames, clip_arrays["ms_target"])],
    ]
    titles = ["frames", "motion map", f"target {grid[0]}x{grid[1]} (> {d.ms_threshold:g})"]
    if maps["ms"] is not None:
        rows.append([cam.overlay_motion(f, p) for f, p in zip(frames, cam.motion_probability(maps["ms"]))])
        titles.append("MS pred")
    write("ms_target.png", rows, titles)
    return paths


def figures(argv: list[str]) -> None:
    from ego_jax.specs import RunSpec  # noqa: PLC0415  (heavy imports after flag parsing)

    with common.one_line_errors(ValueError):
        workdir = FLAGS.workdir and os.path.abspath(FLAGS.workdir)
        paths = draw(
            RunSpec.from_config(FLAGS.config),
            FLAGS.out,
            workdir=workdir,
            stage=FLAGS.stage,
            clip=FLAGS.clip,
            size=FLAGS.size,
            pan=FLAGS.pan,
            roll=FLAGS.roll,
        )
    print("\n".join(paths))


def main(argv: list[str] | None = None) -> None:
    common.run(figures, __doc__, define_flags, argv)


if __name__ == "__main__":
    main()
