"""Measures how GTEA61 frames could be stored: size and OpenCV decode time per frame for each choice.

  python scripts/measure_storage.py --frames ../shared/gtea61/sample
  python scripts/measure_storage.py --frames data/manual/synthetic_full --limit 60
  python scripts/measure_storage.py --data_dir data/tfds --config all   # reading built frames

For RGB, flow and motion-map files found under --frames: the source bytes, lossless PNG re-encodes
(flow and maps as one channel) at several levels, and lossy JPEG; with the encode time (build cost)
and the largest pixel error against the source. One thread, so numbers are per core; best of 5 rounds.
"""

import argparse
import re
import time
from pathlib import Path

import cv2
import numpy as np

KINDS = {"rgb": r"(rgb\d+\.png|image_\d+\.jpe?g)", "flow": r"flow_[xy]_\d+\.(png|jpe?g)", "map": r"map\d+\.png"}


def _time(fn, repeat):
    """Milliseconds per call: the best of 5 rounds, so that other load on the machine counts least."""
    fn()
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(max(1, repeat // 5)):
            fn()
        rounds.append((time.perf_counter() - start) / max(1, repeat // 5))
    return min(rounds) * 1e3


def _choices(kind):
    png = {f"png level {lvl}": (".png", [cv2.IMWRITE_PNG_COMPRESSION, lvl]) for lvl in (1, 3, 9)}
    jpeg = {f"jpeg q{q}": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, q]) for q in (90, 95)}
    return {**png, **(jpeg if kind != "map" else {})}


def measure(files, kind, repeat):
    sources = [f.read_bytes() for f in files]
    images = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED) for b in sources]
    if kind != "rgb":  # flow is 3 identical channels in the release; maps are one channel
        images = [i if i.ndim == 2 else np.ascontiguousarray(i[..., 0]) for i in images]
    rows = [("source", sources, 0.0)]
    for name, (ext, params) in _choices(kind).items():
        enc_ms = np.mean([_time(lambda i=i, ext=ext, params=params: cv2.imencode(ext, i, params), 1) for i in images])
        rows.append(
            (
                name + (" 1-ch" if kind != "rgb" else ""),
                [cv2.imencode(ext, i, params)[1].tobytes() for i in images],
                enc_ms,
            )
        )
    print(f"\n{kind}: {len(files)} files, {images[0].shape}")
    print(f"  {'storage':18s} {'KiB/frame':>9s} {'decode ms':>9s} {'encode ms':>9s} {'max err':>7s}")
    for name, blobs, enc_ms in rows:
        decoded = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED) for b in blobs]
        decoded = [d if d.ndim == i.ndim else d[..., 0] for d, i in zip(decoded, images)]
        err = max(int(np.abs(d.astype(int) - i.astype(int)).max()) for d, i in zip(decoded, images))
        dec_ms = np.mean(
            [_time(lambda b=b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_UNCHANGED), repeat) for b in blobs]
        )
        size = np.mean([len(b) for b in blobs]) / 1024
        print(f"  {name:18s} {size:9.1f} {dec_ms:9.2f} {enc_ms:9.2f} {err:7d}")
    print(f"  {'raw uint8':18s} {images[0].nbytes / 1024:9.1f} {0:9.2f}")


def measure_reads(data_dir, config, repeat):
    """Milliseconds to read every frame of one built example (one record per frame), and per MB."""
    from ego_jax.data import gtea61

    splits = "+".join(sorted(gtea61.Gtea61(config=config, data_dir=data_dir).info.splits))
    source = gtea61.load_source(splits, data_dir=data_dir, config=config)
    examples = [source[i] for i in range(0, len(source), max(1, len(source) // 50))]
    frames = [ex[m] for ex in examples for m in gtea61.CONFIGS[config]]
    mb = sum(len(f) for seq in frames for f in seq) / 1e6
    ms = _time(lambda: [list(seq) for seq in frames], repeat) / len(examples)
    print(
        f"\ngtea61/{config}: {len(examples)} examples, {mb / len(examples):.2f} MB of frames each, "
        f"{ms:.1f} ms to read one example's frames = {ms * len(examples) / mb:.2f} ms per MB"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", help="folder searched recursively for frame files")
    parser.add_argument("--data_dir", help="a built gtea61 dataset: time reading its examples")
    parser.add_argument("--config", default="all")
    parser.add_argument("--limit", type=int, default=30, help="files per kind")
    parser.add_argument("--repeat", type=int, default=20, help="decodes per file")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    if args.data_dir:
        measure_reads(args.data_dir, args.config, args.repeat)
    files = sorted(p for p in Path(args.frames).rglob("*") if p.is_file()) if args.frames else []
    for kind, pattern in KINDS.items():
        found = [f for f in files if re.fullmatch(pattern, f.name)]
        if found:
            step = max(1, len(found) // args.limit)
            measure(found[::step][: args.limit], kind, args.repeat)


if __name__ == "__main__":
    main()
