"""Timings of ego_jax (never asserted in tests). One sub-benchmark per command:

  python scripts/benchmark.py data    [--per_kind_configs --workers 0,1,2 ...]  # bytes per sample, loader clips/s
  python scripts/benchmark.py resize  [--images 'DIR/*.png']             # resize methods: speed and agreement with PIL
  python scripts/benchmark.py step    [--batch 2 --frames 7 --size 224 --dtypes float32,bfloat16]  # train steps
  python scripts/benchmark.py convs   [--stage flow --ops]  # its convolutions alone vs its whole step, jax and torch
  python scripts/benchmark.py layers  [--batch 2 --size 224]   # BN / max-pool backward: ego_jax's vs autodiff's
  python scripts/benchmark.py flow    [--sizes 256x340,224x224 --backends opencv,jax --parity]  # flow pairs/s

Add a sub-benchmark by writing `def run_<name>(args)` and `def args_<name>(parser)` and listing it in BENCHMARKS.
"""

import argparse
import ast
import dataclasses
import functools
import glob
import gzip
import importlib.util
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from ego_jax.data import sampling, transforms  # noqa: E402
from ego_jax.models import resnet  # noqa: E402
from ego_jax.specs import RunSpec  # noqa: E402
from ego_jax.train import clips, sharding, stage  # noqa: E402
from ego_jax.train.step import compiler_options  # noqa: E402


def _write_json(args, **results):
    """--json, when given: the benchmark's arguments, the backend and its device count, then `results`."""
    if args.json:
        arguments = {k: v for k, v in vars(args).items() if k != "json"}
        Path(args.json).write_text(
            json.dumps(dict(arguments, backend=jax.default_backend(), devices=len(jax.devices()), **results), indent=1)
        )


# ----------------------------------------------------------------------------------------------- data


def args_data(parser):
    parser.add_argument("--manual_dir", help="a GTEA61-layout tree (default: generate a full-size synthetic one)")
    parser.add_argument("--classes", type=int, default=8, help="classes of the generated tree (S1, 1 clip each)")
    parser.add_argument("--kinds", default="rgb,flow,two_stream")
    parser.add_argument("--workers", default="0,1,2", help="grain worker counts to time")
    parser.add_argument(
        "--batch",
        type=int,
        default=8,
        help="keep it equal to the clip count, so that every "
        "setting reads each clip equally often (clip lengths vary 5 to 645 frames)",
    )
    parser.add_argument("--batches", type=int, default=3, help="timed batches per setting (after one warm-up batch)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="time each setting this often and keep the best "
        "(other processes on a shared machine only ever slow a run down)",
    )
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--stack", type=int, default=5)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--resize", type=int, default=256)
    parser.add_argument("--methods", default="pil", help=f"comma-separated resize methods of {transforms.METHODS}")
    parser.add_argument("--workdir", help="where to generate and build (default: a temporary folder)")
    parser.add_argument(
        "--per_kind_configs",
        action="store_true",
        help="read each kind from the smallest builder config holding its modalities, not 'all'",
    )


class PilPerFileLoader:
    """The straightforward baseline: per clip, open each sampled PNG with PIL and transform it as the reference does."""

    def __init__(self, root: Path, clip_ids, *, kind, frames, stack, crop, resize, seed=0):
        self.root, self.clip_ids, self.kind = Path(root), list(clip_ids), kind
        self.frames, self.stack, self.crop, self.resize = frames, stack, crop, resize
        self.rng = np.random.default_rng(seed)

    def _files(self, clip_id, folder, sub, pattern):
        base = self.root / folder / clip_id / sub
        return sorted(p for p in base.glob(pattern) if "(" not in p.name)

    def _transform(self, img, flip, scale, position, invert=False):
        return transforms.reference_train_crop(
            img, flip, scale, position, resize=self.resize, crop=self.crop, invert=invert
        )

    def clip(self, i):
        cid = self.clip_ids[i % len(self.clip_ids)]
        flip = self.rng.random() < 0.5
        scale = transforms.SCALES[self.rng.integers(len(transforms.SCALES))]
        position = transforms.POSITIONS[self.rng.integers(len(transforms.POSITIONS))]
        out = {}
        if self.kind != "flow":
            files = self._files(cid, "processed_frames2", "rgb", "rgb*.png")
            out["rgb"] = np.stack(
                [
                    self._transform(Image.open(files[j]).convert("RGB"), flip, scale, position)
                    for j in sampling.rgb_indices(len(files), self.frames)
                ]
            )
        if self.kind != "rgb":
            xs = self._files(cid, "flow_x_processed", "", "flow_x_*.png")
            ys = self._files(cid, "flow_y_processed", "", "flow_y_*.png")
            start = sampling.flow_start_train(len(xs), self.stack, self.rng)
            out["flow"] = np.stack(
                [
                    self._transform(Image.open(f[j]).convert("L"), flip, scale, position, invert=f is xs)
                    for j in sampling.stack_indices(start, len(xs), self.stack)
                    for f in (xs, ys)
                ],
                axis=-1,
            )
        return out


_KIND_CONFIGS = {"rgb": "rgb", "flow": "flow", "two_stream": "rgb_flow"}


def _make_tree(args, workdir: Path) -> Path:
    from ego_jax.data.gtea61.classes import CLASSES
    from ego_jax.data.synthetic import make_synthetic

    if args.manual_dir:
        return Path(args.manual_dir)
    t = time.perf_counter()
    make_synthetic(
        workdir / "manual", preset="full", classes=CLASSES[: args.classes], subjects=("S1",), clips_per_class=1
    )
    print(f"generated {args.classes} full-size clips in {time.perf_counter() - t:.0f} s")
    return workdir / "manual"


def _load(manual: Path, workdir: Path, config: str):
    from ego_jax.data import gtea61

    t = time.perf_counter()
    gtea61.build(manual_dir=manual, data_dir=workdir / "tfds", config=config)
    print(f"built gtea61/{config} in {time.perf_counter() - t:.0f} s")
    splits = "+".join(s for s in ("S1", "S2", "S3", "S4") if (manual / "processed_frames2" / s).is_dir())
    return gtea61.load_source(splits, data_dir=workdir / "tfds", config=config)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _seconds(batches, n):
    """Seconds to take n items of `batches` after a warm-up one (worker start-up and first reads)."""
    it = iter(batches)
    try:
        next(it)
        t = time.perf_counter()
        for _ in range(n):
            next(it)
        return time.perf_counter() - t
    finally:
        if hasattr(it, "close"):
            it.close()  # stops grain's worker processes now, not at exit


def _read(example, kind, settings) -> list[bytes]:
    """The encoded frames an eval sample of `kind` decodes, read without decoding them."""
    n = int(example["num_frames"])
    keys = {"rgb": ("rgb",), "flow": ("flow_x", "flow_y"), "two_stream": ("rgb", "flow_x", "flow_y")}[kind]
    rgb = np.unique(sampling.rgb_indices(n, settings["frames"]))
    flow = sampling.stack_indices(sampling.flow_start_test(n, settings["stack"]), n, settings["stack"])
    return [example[k][int(i)] for k in keys for i in (rgb if k == "rgb" else flow)]


def _rchar() -> int:
    """Bytes this process has read through read()/pread() so far, page cache included (Linux /proc)."""
    return int(re.search(r"rchar: (\d+)", Path("/proc/self/io").read_text())[1])


def _bytes_per_sample(source, kind, settings, index) -> tuple[float, float]:
    """(bytes read from the dataset files, encoded bytes of the frames decoded) to load example `index` once."""
    from ego_jax.data import decode, pipeline

    spec = pipeline.ClipSpec(kind, train=True, **settings)
    decoded = []
    rgb, gray = decode.decode_rgb, decode.decode_gray

    def counting(fn):
        def decode_and_count(data, what=""):
            decoded.append(len(data))
            return fn(data, what)

        return decode_and_count

    decode.decode_rgb, decode.decode_gray = counting(rgb), counting(gray)
    try:
        pipeline.load_clip(source[index], spec, np.random.default_rng(0))  # opens the files, first imports
        decoded.clear()
        start = _rchar()
        pipeline.load_clip(source[index], spec, np.random.default_rng(0))
        return _rchar() - start, sum(decoded)
    finally:
        decode.decode_rgb, decode.decode_gray = rgb, gray


def run_data(args):
    from ego_jax.data import pipeline

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        manual = _make_tree(args, workdir)
        source = _load(manual, workdir, "all")
        sizes = {
            m: np.mean([len(b) for ex in (source[i] for i in range(len(source))) for b in ex[m]])
            for m in ("rgb", "flow_x", "mmaps")
        }
        lengths = [int(source[i]["num_frames"]) for i in range(len(source))]
        print(
            f"{len(source)} clips, frames per clip {sorted(lengths)}; mean PNG bytes "
            + ", ".join(f"{m} {v / 1e3:.0f} kB" for m, v in sizes.items())
            + " (release: rgb 166 kB, flow 28 kB)"
        )
        clip_ids = [_text(source[i]["clip_id"]) for i in range(len(source))]
        settings = dict(frames=args.frames, stack=args.stack, crop=args.crop, resize=args.resize)
        longest = int(np.argmax(lengths))
        for kind in args.kinds.split(","):
            per_clip = np.array([_bytes_per_sample(source, kind, settings, i) for i in range(len(source))]) / 1e6
            (read, needed), (mean_read, mean_needed) = per_clip[longest], per_clip.mean(0)
            print(
                f"  {kind:10s} bytes per train sample, read from the dataset files / of the frames decoded: "
                f"{lengths[longest]}-frame clip {read:.2f} / {needed:.2f} MB ({read / needed:.1f}x), "
                f"mean over clips {mean_read:.2f} / {mean_needed:.2f} MB ({mean_read / mean_needed:.1f}x)"
            )
        clips = args.batch * args.batches
        results = []
        for kind in args.kinds.split(","):
            config = _KIND_CONFIGS[kind] if args.per_kind_configs else "all"
            kind_source = _load(manual, workdir, config) if config != "all" else source
            baseline = PilPerFileLoader(manual, clip_ids, kind=kind, **settings)
            # What reading costs before any decoding: the records an (eval) sample of this kind decodes.
            timed = [
                (
                    f"records of gtea61/{config} only",
                    0,
                    lambda src=kind_source, kind=kind: _seconds(
                        (_read(src[i % len(source)], kind, settings) for i in range(clips + 1)), clips
                    ),
                ),
                (
                    "PIL per file",
                    0,
                    lambda baseline=baseline: _seconds((baseline.clip(i) for i in range(clips + 1)), clips),
                ),
            ]
            for method in args.methods.split(","):
                for workers in map(int, args.workers.split(",")):
                    loader = pipeline.make_loader(
                        kind_source,
                        loader=kind,
                        train=True,
                        global_batch_size=args.batch,
                        worker_count=workers,
                        method=method,
                        **settings,
                    )
                    timed.append(
                        (
                            f"grain, gtea61/{config}, method {method}",
                            workers,
                            lambda loader=loader: _seconds(loader, args.batches),
                        )
                    )
            best = [min(run() for _ in range(args.repeats)) for _, _, run in timed]
            rows = [dict(loader=name, workers=w, clips_per_s=clips / secs) for (name, w, _), secs in zip(timed, best)]
            for r in rows:
                print(f"  {kind:10s} {r['loader']:38s} workers {r['workers']}: {r['clips_per_s']:6.1f} clips/s")
            results += [dict(kind=kind, **r) for r in rows]
        print(json.dumps(dict(settings=settings, batch=args.batch, results=results)))


# --------------------------------------------------------------------------------------------- resize


def args_resize(parser):
    parser.add_argument("--images", help="glob of frames (default: a generated textured 455x256 frame)")
    parser.add_argument("--repeats", type=int, default=100)


def _timed(fn, repeats):
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats * 1e3


def run_resize(args):
    if args.images:
        imgs = [np.asarray(Image.open(f).convert("RGB")) for f in sorted(glob.glob(args.images))]
    else:
        import cv2

        noise = np.random.default_rng(0).random((66, 116, 3)).astype(np.float32) * 255
        imgs = [np.clip(cv2.resize(noise, (455, 256), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)]
    if not imgs:
        raise SystemExit(f"no images match {args.images!r}")
    for side in (256, 224, 192, 168):
        crops = [np.ascontiguousarray(img[:side, -side:]) for img in imgs]
        pil = [np.asarray(Image.fromarray(c).resize((224, 224), Image.BILINEAR)).astype(int) for c in crops]
        line = [f"crop {side} -> 224:"]
        ms = _timed(lambda crop=crops[0]: Image.fromarray(crop).resize((224, 224), Image.BILINEAR), args.repeats)
        line.append(f"PIL {ms:.3f} ms")
        for method in transforms.METHODS:
            diff = np.concatenate(
                [
                    np.abs(transforms.resize_bilinear(c, 224, 224, method).astype(int) - p).ravel()
                    for c, p in zip(crops, pil)
                ]
            )
            ms = _timed(
                lambda crop=crops[0], method=method: transforms.resize_bilinear(crop, 224, 224, method), args.repeats
            )
            line.append(f"{method} {ms:.3f} ms (vs PIL: max {diff.max()}, mean {diff.mean():.3f})")
        print("  ".join(line))


# ----------------------------------------------------------------------------------------------- step


def _repeatable(parser, flag: str, help: str):
    """A KEY=VALUE argument that may be given many times (a list, empty by default)."""
    parser.add_argument(flag, action="append", default=[], metavar="KEY=VALUE", help=help)


def _stage_args(parser, steps_help):
    """The arguments every train-step benchmark takes: which config, the input sizes, the rounds, overrides."""
    parser.add_argument(
        "--config",
        default="configs/two_stream.py",
        help="config file[:args], as scripts/train.py takes it (relative paths: from the checkout)",
    )
    parser.add_argument("--batch", type=int, default=2, help="global batch, split over all local devices")
    parser.add_argument("--frames", type=int, default=7)
    parser.add_argument("--size", type=int, default=224, help="crop side (config.data.crop)")
    parser.add_argument("--steps", type=int, default=5, help=steps_help)
    _repeatable(parser, "--set", "config override, e.g. --set model.scan_unroll=1 (repeatable)")
    parser.add_argument("--json", help="also write the rows to this file")


def args_step(parser):
    _stage_args(parser, "timed steps per stage, after the first (compiling) one")
    parser.add_argument("--stages", help="comma-separated stages (default: the config's recipe)")
    parser.add_argument("--dtypes", default="float32", help="compute dtypes (config.dtype), comma-separated")
    _repeatable(
        parser,
        "--compare",
        "also time every stage with this override in the same rounds, e.g. --compare "
        "compiler_options= (XLA's own defaults) or --compare model.scan_unroll=1 (repeatable)",
    )
    parser.add_argument(
        "--torch",
        choices=("auto", "yes", "no"),
        default="auto",
        help="time the reference's stages re-stated in torch (scripts/torch_stages.py) in the same "
        "rounds; auto: when torch imports",
    )


def _config(spec: str, overrides, **sizes):
    """'configs/x.py[:args]', top-level `sizes`, then ['a.b=value', ...] -> the locked config, as train.py loads it."""
    path, _, arg = spec.partition(":")
    if not os.path.exists(path):
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
    module_spec = importlib.util.spec_from_file_location("benchmark_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    config.update(sizes)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. model.scan_unroll=1")
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node[name]
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass  # a plain string (or '' from KEY=)
        node[leaf] = value
    return config


def _example_batch(run: RunSpec, name: str, model, mesh):
    """Random uint8 frames and labels with the keys, shapes and dtypes of the stage's train loader, on the mesh."""
    b = run.batch_size
    spec = clips.train_clip_spec(run, name, model)
    rng = np.random.default_rng(0)
    batch = dict(
        label=rng.integers(0, run.num_classes, b).astype(np.int32),
        mask=np.ones(b, bool),
        index=np.arange(b, dtype=np.int32),
    )
    for key, (shape, dtype) in spec.shapes().items():
        if dtype == np.uint8:
            batch[key] = rng.integers(0, 256, (b, *shape), np.uint8)
    if spec.ms_grid:
        batch["ms_target"] = (rng.random((b, *spec.shapes()["ms_target"][0])) < 0.3).astype(np.float32)
    return jax.device_put(batch, sharding.batch_sharding(mesh))


class _JaxStage:
    """A stage built as the train loop builds it (ego_jax.train.stage.build), stepped on one fixed batch."""

    def __init__(self, config, name: str, mesh):
        run = RunSpec.from_config(config)
        self.run = run
        self.built = stage.build(run, name, mesh, steps_per_epoch=1)
        self.batch = _example_batch(run, name, self.built.model, mesh)

    def __call__(self):
        b = self.built
        b.state, metrics = b.train_step(b.state, b.frozen, self.batch)
        jax.block_until_ready((b.state, metrics))


def _torch_device():
    import torch

    return "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"


def _torch_step(config, name: str):
    """The reference's stage `name` re-stated in torch (scripts/torch_stages.py) at the config's sizes."""
    import torch_stages

    d, m = config.data, config.model
    return torch_stages.make_step(
        name,
        batch=config.batch_size,
        frames=d.frames,
        crop=d.crop,
        stack=d.stack,
        num_classes=config.num_classes,
        depth=m.depth,
        width=m.width,
        device=_torch_device(),
    )


def _args_config(args, extra=(), dtype="float32"):
    """The config a train-step benchmark's arguments (_stage_args) select, plus the overrides `extra`."""
    sizes = [f"data.frames={args.frames}", f"data.crop={args.size}"]
    return _config(args.config, sizes + args.set + list(extra), batch_size=args.batch, dtype=dtype)


def _print_machine(args):
    print(
        f"jax {jax.__version__} on {len(jax.devices())} x {jax.devices()[0].device_kind} ({jax.default_backend()}); "
        f"{args.config} batch {args.batch}, {args.frames} frames, {args.size} px; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores"
    )


def _rounds(runners: dict, steps: int):
    """-> ({key: first call's wall s}, {key: [(wall s, process CPU s)] per round}): each callable once per round,
    so that a change of machine load hits all alike; the first (untimed) call compiles (jax) or warms up the
    allocator and oneDNN's kernel choice (torch)."""

    def timed(fn):
        t, cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - t, time.process_time() - cpu

    first = {key: timed(fn)[0] for key, fn in runners.items()}
    times = {key: [] for key in runners}
    for _ in range(steps):
        for key, fn in runners.items():
            times[key].append(timed(fn))
    return first, times


def run_step(args):
    mesh = sharding.make_mesh()
    use_torch = args.torch == "yes" or (args.torch == "auto" and importlib.util.find_spec("torch") is not None)
    configs = {}  # implementation label -> config
    for dtype in args.dtypes.split(","):
        for extra in [None] + args.compare:
            config = _args_config(args, [extra] * bool(extra), dtype)
            configs[f"ego_jax {dtype}" + (f" [{extra}]" if extra else "")] = config
    config = next(iter(configs.values()))
    sharding.check_batch_size(args.batch, mesh)
    stages = args.stages.split(",") if args.stages else list(config.recipe)
    _print_machine(args)

    runners = {}  # (stage, impl) -> step callable; built one by one, so a failing stage is named
    for name in stages:
        for impl, c in configs.items():
            runners[name, impl] = _JaxStage(c, name, mesh)
            options = compiler_options(c.compiler_options, kind=c.stages[name].model.kind)
            print(f"{name} | {impl}: XLA options {options or 'XLA defaults'}")
        if use_torch:
            import torch_stages

            if name in torch_stages.STAGES:
                runners[name, "torch (reference) float32"] = _torch_step(config, name)

    first, times = _rounds(runners, args.steps)
    load = os.getloadavg()[0]

    rows = []
    reference = {name: ts for (name, impl), ts in times.items() if impl == "torch (reference) float32"}
    for (name, impl), ts in times.items():
        med, cpu = statistics.median(t[0] for t in ts), min(t[1] for t in ts)
        ref = reference.get(name)
        rows.append(
            dict(
                stage=name,
                impl=impl,
                first_step_s=first[name, impl],
                step_s=med,
                steps_per_s=1 / med,
                clips_per_s=args.batch / med,
                cpu_s=cpu,
                vs_reference=med / statistics.median(t[0] for t in ref) if ref else None,
                cpu_vs_reference=cpu / min(t[1] for t in ref) if ref else None,
            )
        )
    print(
        f"\n| stage | implementation | first step (compile) s | s/step (median of {args.steps}) | steps/s | clips/s "
        f"| time / reference | CPU s/step (best) | CPU / reference |\n|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        ratio = f"{r['vs_reference']:.2f}x" if r["vs_reference"] else "-"
        cpu_ratio = f"{r['cpu_vs_reference']:.2f}x" if r["cpu_vs_reference"] else "-"
        print(
            f"| {r['stage']} | {r['impl']} | {r['first_step_s']:.1f} | {r['step_s']:.3f} | {r['steps_per_s']:.2f} "
            f"| {r['clips_per_s']:.1f} | {ratio} | {r['cpu_s']:.3f} | {cpu_ratio} |"
        )
    print(f"load average after: {load:.1f}")
    _write_json(args, rows=rows)


# ---------------------------------------------------------------------------------------------- convs


def args_convs(parser):
    _stage_args(parser, "timed rounds after the first (compiling) one; a round times (a), (b), (c), (d) once each")
    parser.add_argument("--stage", default="flow", help="the stage whose convolutions are timed")
    parser.add_argument(
        "--ops",
        action="store_true",
        help="CPU: also trace (a) per op (XLA's traceme) and split it into the convolution kernels and the rest",
    )


@dataclasses.dataclass(frozen=True)
class _Conv:
    """One convolution of a stage's forward pass, as the jaxpr of its loss holds it."""

    lhs: jax.ShapeDtypeStruct
    rhs: jax.ShapeDtypeStruct
    params: dict  # conv_general_dilated's: strides, padding, dilations, dimension_numbers, ...
    input_grad: bool  # whether the step differentiates the input too (not for a convolution of the data)


def _conv(c: _Conv, x, w):
    return lax.conv_general_dilated_p.bind(x, w, **c.params)


def _convolutions(jax_stage: _JaxStage, name: str) -> list[_Conv]:
    """Every convolution of stage `name`'s forward pass, in order, read from the jaxpr of the loss that its train
    step differentiates (ego_jax.train.step): the shapes and parameters the compiled step convolves with."""
    built, run = jax_stage.built, jax_stage.run
    loss_fn = stage.make_loss_fn(run.stage(name), jnp.dtype(run.dtype))
    s = built.state

    def loss(params, batch):
        return loss_fn(nnx.merge(built.graphdef, params, s.stats, s.rngs, built.frozen, copy=True), batch)[0]

    closed = jax.make_jaxpr(loss)(s.params, jax_stage.batch)
    found = []

    def walk(jaxpr, differentiated: set):  # the variables that depend on the trainable parameters
        for eqn in jaxpr.eqns:
            ins = [not isinstance(v, jax.extend.core.Literal) and v in differentiated for v in eqn.invars]
            if eqn.primitive is lax.conv_general_dilated_p:
                lhs, rhs = (jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars)
                found.append(_Conv(lhs, rhs, eqn.params, ins[0]))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub, {v for v, d in zip(sub.invars, ins) if d} if len(sub.invars) == len(ins) else set())
            if any(ins):
                differentiated.update(eqn.outvars)

    walk(closed.jaxpr, set(closed.jaxpr.invars[: len(jax.tree.leaves(s.params))]))
    if not found:
        raise SystemExit(f"stage {name!r}: its forward pass has no convolution")
    return found


def _conv_inputs(convs: list[_Conv]):
    """Random (inputs, kernels, output gradients) of the convolutions, as numpy arrays in jax's layouts."""
    rng = np.random.default_rng(0)

    def normal(a):
        return rng.standard_normal(a.shape).astype(a.dtype)

    outs = [jax.eval_shape(functools.partial(_conv, c), c.lhs, c.rhs) for c in convs]
    return [normal(c.lhs) for c in convs], [normal(c.rhs) for c in convs], [normal(o) for o in outs]


def _xla_convs(convs: list[_Conv], options: dict):
    """-> jitted (inputs, kernels, output gradients) -> each convolution's forward, its weight gradient and, where
    the step takes it, its input gradient (jax's own transpose rules, as the train step differentiates them),
    compiled with `options`; nothing else is computed."""

    def all_convs(xs, ws, dys):
        out = []
        for c, x, w, dy in zip(convs, xs, ws, dys):
            f, primals = (
                (functools.partial(_conv, c), (x, w)) if c.input_grad else (functools.partial(_conv, c, x), (w,))
            )
            y, vjp = jax.vjp(f, *primals)
            out += [y, *vjp(dy)]
        return out

    return jax.jit(all_convs, compiler_options=options or None)


def _kernel_split(convs: list[_Conv], arrays, options: dict, calls: int) -> dict:
    """(a) under XLA:CPU's per-op trace (xla_cpu_enable_xprof_traceme), each op's best of `calls` calls, summed into
    the convolution kernels (library convolution fusions, XLA's own convolutions) and every other op of the
    program (the layout copies and transposes XLA puts around them)."""
    fn = _xla_convs(convs, dict(options, xla_cpu_enable_xprof_traceme=True))
    hlo = fn.lower(*arrays).compile().as_text()
    kind = {
        name: "kernels" if " convolution(" in line or "kind=kCustom" in line else "other"
        for name, line in re.findall(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*)$", hlo, re.M)
    }
    jax.block_until_ready(fn(*arrays))
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(fn(*arrays))
        (trace,) = Path(tmp).glob("**/perfetto_trace.json.gz")
        events = json.loads(gzip.decompress(trace.read_bytes()))
    best = {}  # op -> its shortest run, µs
    for e in events["traceEvents"] if isinstance(events, dict) else events:
        if e.get("ph") == "X" and e.get("name") in kind:
            best[e["name"]] = min(best.get(e["name"], float("inf")), e["dur"])
    split = {k: [v / 1e3 for op, v in best.items() if kind[op] == k] for k in ("kernels", "other")}
    return dict(
        kernels_ms=sum(split["kernels"]),
        kernel_ops=len(split["kernels"]),
        other_ms=sum(split["other"]),
        other_ops=len(split["other"]),
    )


def _torch_convs(convs: list[_Conv], inputs):
    """-> run(): the same convolutions on the same values through torch (oneDNN on CPU), NCHW, each as the
    reference's autograd runs it: aten.convolution forward, then one aten.convolution_backward for the gradients."""
    import torch

    calls = []
    for c, x, w, dy in zip(convs, *inputs):
        p, dn = c.params, c.params["dimension_numbers"]
        if any(d != 1 for d in p["lhs_dilation"]) or any(lo != hi for lo, hi in p["padding"]):
            raise SystemExit(f"a convolution torch cannot state: {p}")
        tx, tw, tdy = (
            torch.from_numpy(np.ascontiguousarray(a.transpose(spec))).to(_torch_device())
            for a, spec in ((x, dn.lhs_spec), (w, dn.rhs_spec), (dy, dn.out_spec))
        )
        stride, padding, dilation = list(p["window_strides"]), [lo for lo, _ in p["padding"]], list(p["rhs_dilation"])
        zeros, groups = [0] * len(stride), p["feature_group_count"]
        calls.append(
            (
                (tx, tw, None, stride, padding, dilation, False, zeros, groups),
                (tdy, tx, tw, None, stride, padding, dilation, False, zeros, groups, [c.input_grad, True, False]),
            )
        )

    def run():
        with torch.no_grad():
            for forward, backward in calls:
                torch.ops.aten.convolution(*forward)
                torch.ops.aten.convolution_backward(*backward)
        if tx.is_cuda:
            torch.cuda.synchronize()

    return run


_CONV_ROWS = {  # run_convs' rows, timed in this order in every round
    "a": "convolutions alone, XLA",
    "b": "convolutions alone, torch",
    "c": "whole step, reference (torch)",
    "d": "whole step, ego_jax",
}


def run_convs(args):
    """(a) the stage's convolutions alone, forward and gradients, as XLA compiles them, (b) the same through torch,
    (c) the reference's whole step re-stated in torch (as `step` times it), (d) ego_jax's whole step, in
    interleaved rounds: what the convolutions alone cost each side against the whole steps."""
    mesh = sharding.make_mesh()
    config = _args_config(args)
    sharding.check_batch_size(args.batch, mesh)
    _print_machine(args)
    jax_step = _JaxStage(config, args.stage, mesh)
    convs = _convolutions(jax_step, args.stage)
    options = compiler_options(jax_step.run.compiler_options, kind=jax_step.run.stage(args.stage).model.kind)
    inputs = _conv_inputs(convs)
    arrays = jax.device_put(inputs)
    xla = _xla_convs(convs, options)
    found = dict(convolutions=len(convs), input_gradients=sum(c.input_grad for c in convs))
    print(
        f"{args.stage}: {found['convolutions']} convolutions, each forward and weight gradient, input gradient for "
        f"{found['input_gradients']}; XLA options {options or 'XLA defaults'}"
    )
    runners = dict(
        a=lambda: jax.block_until_ready(xla(*arrays)),
        b=_torch_convs(convs, inputs),
        c=_torch_step(config, args.stage),
        d=jax_step,
    )
    first, times = _rounds(runners, args.steps)
    rows = {
        key: dict(
            row=key,
            what=_CONV_ROWS[key],
            first_s=first[key],
            wall_s=statistics.median(t[0] for t in ts),
            cpu_s=min(t[1] for t in ts),
        )
        for key, ts in times.items()
    }
    ratios = {
        f"{x}/{y}": dict(wall=rows[x]["wall_s"] / rows[y]["wall_s"], cpu=rows[x]["cpu_s"] / rows[y]["cpu_s"])
        for x, y in ("ab", "ac", "dc")
    }
    print(f"\n| | s (median of {args.steps}) | CPU s (best) |\n|---|---|---|")
    for r in rows.values():
        print(f"| ({r['row']}) {r['what']} | {r['wall_s']:.3f} | {r['cpu_s']:.3f} |")
    for key, r in ratios.items():
        print(f"| {key} | {r['wall']:.2f}x | {r['cpu']:.2f}x |")
    if args.ops:
        split = _kernel_split(convs, arrays, options, args.steps)
        share = split["kernels_ms"] / (split["kernels_ms"] + split["other_ms"])
        kernels_s = share * rows["a"]["cpu_s"]
        vs = {f"kernels/{k}": kernels_s / rows[k]["cpu_s"] for k in "bc"}
        print(
            f"(a) traced, each op's best of {args.steps} calls: convolution kernels {split['kernels_ms']:.1f} ms "
            f"({split['kernel_ops']} ops), other ops (layout copies, transposes) {split['other_ms']:.1f} ms "
            f"({split['other_ops']} ops); the kernels' {share:.0%} of (a)'s CPU s, {kernels_s:.3f} s, are "
            f"{vs['kernels/b']:.2f}x (b) and {vs['kernels/c']:.2f}x (c)"
        )
        found["ops"] = dict(split, kernel_share=share, kernels_cpu_s=kernels_s, cpu_ratios=vs)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    _write_json(args, **found, options=options, rows=list(rows.values()), ratios=ratios)


# --------------------------------------------------------------------------------------------- layers


def args_layers(parser):
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=224, help="input side of the ResNet whose layer shapes are timed")
    parser.add_argument("--depth", type=int, default=34)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--dtypes", default="float32", help="comma-separated; BN computes in float32 either way")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (after one compiling call); best kept")
    parser.add_argument("--json", help="also write the rows to this file")


def _bn_shapes(batch, size, depth, width):
    """(N, H, W, C) of every BatchNorm input of a ResNet on size x size input (stem, then each block's)."""
    side = (size - 1) // 2 + 1
    shapes = [(batch, side, side, width)]
    side = (side - 1) // 2 + 1  # max-pool
    for k, n in enumerate(resnet.BLOCKS[depth]):
        cout = width * 2**k
        for i in range(n):
            if i == 0 and k > 0:
                side = (side - 1) // 2 + 1
            shapes += [(batch, side, side, cout)] * (3 if i == 0 and k > 0 else 2)
    return shapes


def run_layers(args):
    """Forward + backward of every training-mode BatchNorm and of the max-pool at a ResNet's shapes, each as
    ego_jax computes it (closed-form / elementwise backward: `resnet.batch_norm_train`, `resnet.max_pool_3x3_s2_p1`)
    and as autodiff of the plain formula would (the custom VJPs' `.fun`), so that a backend where the custom
    backward were slower shows it."""
    rng = np.random.default_rng(0)
    rows = []
    for dtype in args.dtypes.split(","):
        shapes = _bn_shapes(args.batch, args.size, args.depth, args.width)
        xs = [jax.device_put(rng.standard_normal(s).astype(dtype)) for s in shapes]
        stem = jax.device_put(rng.standard_normal(shapes[0]).astype(dtype))

        def bn_loss(bn, xs):
            total = 0.0
            for x in xs:
                c = x.shape[-1]
                y = bn(x.astype(np.float32), jnp.ones(c), jnp.zeros(c), 1e-5)[0]
                total = total + jnp.vdot(y, y)
            return total

        cases = {
            "BatchNorm (training mode), every layer": (bn_loss, resnet.batch_norm_train, xs),
            "max-pool 3x3/2": (lambda pool, x: jnp.vdot(*(pool(x),) * 2), resnet.max_pool_3x3_s2_p1, stem),
        }
        for what, (loss, custom, inputs) in cases.items():
            times = {}
            for impl, fn in (("ego_jax", custom), ("autodiff", custom.fun)):
                grad = jax.jit(jax.grad(lambda x, fn=fn, loss=loss: loss(fn, x)))
                jax.block_until_ready(grad(inputs))
                best = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    jax.block_until_ready(grad(inputs))
                    best.append(time.perf_counter() - t)
                times[impl] = min(best)
            rows.append(
                dict(
                    layer=what,
                    dtype=dtype,
                    ego_jax_ms=times["ego_jax"] * 1e3,
                    autodiff_ms=times["autodiff"] * 1e3,
                    ratio=times["ego_jax"] / times["autodiff"],
                )
            )
            r = rows[-1]
            print(
                f"{what:40s} {dtype:9s} ego_jax {r['ego_jax_ms']:8.2f} ms, autodiff {r['autodiff_ms']:8.2f} ms: "
                f"{r['ratio']:.2f}x"
            )
    _write_json(args, rows=rows)


# ----------------------------------------------------------------------------------------------- flow


def args_flow(parser):
    parser.add_argument(
        "--sizes",
        default="256x340,224x224",
        help="HxW frame sizes (dense_flow's usual --new_width 340 --new_height 256 is 256x340)",
    )
    parser.add_argument("--backends", default="opencv,jax")
    parser.add_argument("--methods", default="tvl1,warp_tvl1")
    parser.add_argument(
        "--batch",
        type=int,
        default=0,
        help="jax: pairs per call over all local devices (default: 64 per accelerator, 4 per CPU)",
    )
    parser.add_argument("--pairs", type=int, default=4, help="opencv: pairs timed per setting")
    parser.add_argument("--repeats", type=int, default=2, help="time each setting this often and keep the best")
    _repeatable(parser, "--tvl1", "a TV-L1 parameter (default: dense_flow's), repeatable")
    parser.add_argument(
        "--parity",
        action="store_true",
        help="also print each backend's end-point error against known motions and between backends",
    )
    parser.add_argument("--json", help="write the results here")


def _flow_scenes(size):
    """Real photographs moved by known motions (ego_jax/data/flow/scenes.py): a GTEA61 frame when the checkout has
    one (tests/data), else matplotlib's Grace Hopper; Grace Hopper is the moving object."""
    import cv2
    import matplotlib.cbook

    from ego_jax.data.flow import scenes

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = cv2.imdecode(np.frombuffer(f.read(), np.uint8), cv2.IMREAD_GRAYSCALE)
    gtea = Path(__file__).parents[1] / "tests" / "data" / "gtea61_sample" / "rgb0011.png"
    background = cv2.imread(str(gtea), cv2.IMREAD_GRAYSCALE) if gtea.exists() else hopper
    return scenes.known_motion_scenes(background, hopper, size)


def run_flow(args):
    import cv2

    from ego_jax.data import flow
    from ego_jax.data.flow import scenes

    params = flow.TVL1.parse(args.tvl1)
    devices = jax.local_devices()
    batch = args.batch or len(devices) * (4 if devices[0].platform == "cpu" else 64)
    workers = os.cpu_count() or 1
    print(
        f"{len(devices)} {jax.default_backend()} device(s) ({devices[0].device_kind}); OpenCV {cv2.__version__}, "
        f"{cv2.getNumThreads()} threads; {workers} homography threads; {params}"
    )
    rows, parity = [], []
    for size in [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]:
        found, tvl1_fields = _flow_scenes(size), {}
        for backend in args.backends.split(","):
            n = batch if backend == "jax" else args.pairs
            pick = [found[i % len(found)] for i in range(n)]
            prev, next_ = np.stack([s.prev for s in pick]), np.stack([s.next_ for s in pick])
            for method in args.methods.split(","):
                spec = flow.FlowSpec(method=method, backend=backend, tvl1=params)
                times = []
                for _ in range(args.repeats + 1):  # the first call compiles (jax)
                    start = time.perf_counter()
                    fields, _ = flow.pairs_flow(prev, next_, spec, batch=batch, workers=workers)
                    times.append(time.perf_counter() - start)
                if method == "tvl1":
                    tvl1_fields[backend] = fields
                rows.append(
                    {
                        "size": f"{size[1]}x{size[0]}",
                        "backend": backend,
                        "method": method,
                        "pairs": n,
                        "devices": len(devices) if backend == "jax" else 1,
                        "pairs_per_s": n / min(times[1:]),
                        "first_call_s": times[0],
                    }
                )
                print(
                    f"{size[1]:>4d}x{size[0]:<4d} {backend:7s} {method:10s} {rows[-1]['pairs_per_s']:8.2f} pairs/s "
                    f"({n} pairs per call, first call {times[0]:.1f} s)",
                    flush=True,
                )
        for i, s in enumerate(found):
            row = {"size": f"{size[1]}x{size[0]}", "scene": s.name}
            row.update({f"epe_{b}": scenes.epe(f[i], s.flow, s.valid) for b, f in tvl1_fields.items()})
            if len(tvl1_fields) == 2:
                row["epe_jax_vs_opencv"] = scenes.epe(tvl1_fields["jax"][i], tvl1_fields["opencv"][i], s.valid)
            parity.append(row)
    if args.parity:
        print("\nTV-L1 end-point error (px) against the known motion, and between the backends:")
        for row in parity:
            print("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{v}" for k, v in row.items()))
    _write_json(args, tvl1=str(params), rows=rows, parity=parity)


BENCHMARKS = {
    "data": (args_data, run_data),
    "resize": (args_resize, run_resize),
    "step": (args_step, run_step),
    "convs": (args_convs, run_convs),
    "layers": (args_layers, run_layers),
    "flow": (args_flow, run_flow),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for name, (add_args, _) in BENCHMARKS.items():
        add_args(sub.add_parser(name))
    args = parser.parse_args(argv)
    BENCHMARKS[args.benchmark][1](args)


if __name__ == "__main__":
    main()
