"""CAM attention and motion-map overlays on RGB frames, as picture grids and CAM videos (host-side numpy/OpenCV,
uint8 RGB images)."""

import cv2
import numpy as np
from etils import epath
from PIL import Image


def _check_frame(frame: np.ndarray, where: str) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise ValueError(
            f"{where}: expected an (H, W, 3) uint8 RGB frame, got shape {frame.shape} dtype {frame.dtype}; "
            "pass the un-normalised frames the loader yields"
        )
    return frame


def upsample_map(values: np.ndarray, size: tuple[int, int], *, normalize: bool) -> np.ndarray:
    """(h, w) map -> (H, W) float32 by bilinear interpolation; min-max scaled to [0, 1] when normalize."""
    values = np.asarray(values, np.float32)
    if values.ndim != 2:
        raise ValueError(f"upsample_map: expected an (h, w) map, got shape {values.shape}")
    if normalize:
        lo, hi = float(values.min()), float(values.max())
        # A constant map has no peak to show; render it as all-zero rather than dividing by zero.
        values = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    height, width = size
    # Pixel-centre aligned, like the reference's cv2.resize of the 7x7 CAM to 224x224.
    return cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)


def colorize(heat: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] -> (H, W, 3) uint8 RGB with OpenCV's JET colour map (blue low, red high)."""
    heat8 = np.clip(np.rint(np.asarray(heat, np.float32) * 255.0), 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(heat8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def blend(frame: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 frame, (H, W) heat in [0, 1] -> (1 - alpha) * frame + alpha * jet(heat), uint8."""
    frame = _check_frame(frame, "blend")
    if heat.shape != frame.shape[:2]:
        raise ValueError(f"blend: heat shape {heat.shape} does not match frame shape {frame.shape[:2]}")
    return cv2.addWeighted(frame, 1.0 - alpha, colorize(heat), alpha, 0.0)


def overlay_attention(frame: np.ndarray, attention: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 frame, (h, w) CAM attention -> (H, W, 3) uint8 frame with the min-max scaled CAM blended in."""
    frame = _check_frame(frame, "overlay_attention")
    return blend(frame, upsample_map(attention, frame.shape[:2], normalize=True), alpha)


def overlay_motion(frame: np.ndarray, motion: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 frame, (h, w) moving probability/fraction in [0, 1] -> (H, W, 3) uint8 overlay (not rescaled)."""
    frame = _check_frame(frame, "overlay_motion")
    return blend(frame, np.clip(upsample_map(motion, frame.shape[:2], normalize=False), 0.0, 1.0), alpha)


def motion_probability(ms: np.ndarray) -> np.ndarray:
    """MS head output (..., h, w, K) -> (..., h, w) in [0, 1]: softmax moving-class prob (K=2) or the value (K=1)."""
    ms = np.asarray(ms, np.float32)
    if ms.shape[-1] == 1:
        return ms[..., 0]
    if ms.shape[-1] == 2:
        # sigmoid(l1 - l0) via logaddexp: no overflow for confident predictions.
        return np.exp(-np.logaddexp(0.0, ms[..., 0] - ms[..., 1]))
    raise ValueError(f"motion_probability: expected K=1 (regression) or K=2 (classification) last axis, got {ms.shape}")


def _label(image: np.ndarray, text: str) -> np.ndarray:
    """Draws a small caption with a dark outline so it reads on any overlay."""
    image = image.copy()
    scale = max(image.shape[0] / 400.0, 0.3)
    org = (3, int(22 * scale) + 3)  # baseline below the cap height (about 22 px at scale 1)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def image_grid(rows: list[list[np.ndarray]], row_titles: list[str] | None = None, pad: int = 2) -> np.ndarray:
    """Rows of equally sized (H, W, 3) uint8 images -> one (R*(H+pad)-pad, C*(W+pad)-pad, 3) uint8 grid, white gaps."""
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        raise ValueError(
            f"image_grid: expected a non-empty list of rows of equal length, got lengths {[len(r) for r in rows]}"
        )
    height, width = rows[0][0].shape[:2]
    grid = np.full((len(rows) * (height + pad) - pad, len(rows[0]) * (width + pad) - pad, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            if image.shape != (height, width, 3):
                raise ValueError(f"image_grid: image ({i}, {j}) has shape {image.shape}, expected {(height, width, 3)}")
            if row_titles is not None and j == 0:
                image = _label(image, row_titles[i])
            grid[i * (height + pad) : i * (height + pad) + height, j * (width + pad) : j * (width + pad) + width] = (
                image
            )
    return grid


def cam_grid(
    frames: np.ndarray,
    attention: np.ndarray | None = None,
    ms_pred: np.ndarray | None = None,
    ms_target: np.ndarray | None = None,
    *,
    alpha: float = 0.5,
    title: str = "",
    min_size: int = 0,
) -> np.ndarray:
    """(T, H, W, 3) uint8 frames [+ (T, h, w) attention, (T, h, w, K) predicted MS, (T, h, w) target] -> grid image.

    Rows: frames, CAM overlays, predicted motion, target motion (the rows whose input is None are left out),
    under a white band with the lines of `title` when given. Frames smaller than `min_size` px (short side)
    are enlarged for display (bilinear) before the maps are laid over them.
    """
    return compare_grid(
        frames,
        [dict(label="", attention=attention, ms_pred=ms_pred, ms_target=ms_target)],
        alpha=alpha,
        title=title,
        min_size=min_size,
    )


def _enlarged(frames: np.ndarray, min_size: int) -> np.ndarray:
    """(T, H, W, 3) frames enlarged (bilinear) so that their short side is at least min_size, for display."""
    frames = np.asarray(frames)
    height, width = frames.shape[1:3]
    zoom = max(1.0, min_size / min(height, width))
    if zoom == 1.0:
        return frames
    size = (round(width * zoom), round(height * zoom))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for f in frames])


def _title_band(lines: list[str], width: int) -> np.ndarray:
    """A white (18 * lines + 4, width, 3) band with the lines of text."""
    band = np.full((18 * len(lines) + 4, width, 3), 255, np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(band, line, (3, 16 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return band


def cam_video(
    frames: np.ndarray,
    attention: np.ndarray | None = None,
    ms_pred: np.ndarray | None = None,
    *,
    alpha: float = 0.5,
    title: str = "",
    min_size: int = 0,
) -> np.ndarray:
    """(T, H, W, 3) uint8 frames [+ (T, h, w) attention, (T, h, w, K) predicted MS] -> (T, H', W', 3) uint8 video:
    at each time the frame, its CAM overlay and its motion overlay side by side (those given), under `title`."""
    frames = _enlarged(frames, min_size)
    columns, names = [list(frames)], ["frame"]
    if attention is not None:
        columns.append([overlay_attention(f, a, alpha) for f, a in zip(frames, np.asarray(attention), strict=True)])
        names.append("CAM")
    if ms_pred is not None:
        columns.append([overlay_motion(f, p, alpha) for f, p in zip(frames, motion_probability(ms_pred), strict=True)])
        names.append("MS pred")
    out = []
    for t in range(len(frames)):
        grid = image_grid([[_label(column[t], name) for column, name in zip(columns, names)]])
        lines = title.splitlines() + [f"frame {t + 1}/{len(frames)}"]
        out.append(np.concatenate([_title_band(lines, grid.shape[1]), grid], axis=0))
    return np.stack(out)


def write_png(path, image: np.ndarray) -> epath.Path:
    """Writes an (H, W, 3) uint8 RGB image as PNG through epath (a folder or a bucket; parents created) -> path."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode PNG {path}")
    path.write_bytes(png.tobytes())
    return path


def write_gif(path, frames: np.ndarray, fps: float) -> None:
    """(T, H, W, 3) uint8 RGB frames -> an endlessly looping GIF at `fps` (PIL)."""
    images = [Image.fromarray(np.ascontiguousarray(f)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)


def compare_grid(
    frames: np.ndarray, models: list[dict], *, alpha: float = 0.5, title: str = "", min_size: int = 0
) -> np.ndarray:
    """cam_grid for several models of the same clip: the frames once, then per model its CAM / MS pred / target rows.

    models: dicts of label (row title prefix) and attention, ms_pred, ms_target (each None or as in cam_grid).
    """
    frames = _enlarged(frames, min_size)
    rows, titles = [list(frames)], ["frames"]
    for m in models:
        prefix = f"{m['label']} " if m["label"] else ""
        if m.get("attention") is not None:
            rows.append(
                [overlay_attention(f, a, alpha) for f, a in zip(frames, np.asarray(m["attention"]), strict=True)]
            )
            titles.append(prefix + "CAM")
        if m.get("ms_pred") is not None:
            rows.append(
                [overlay_motion(f, p, alpha) for f, p in zip(frames, motion_probability(m["ms_pred"]), strict=True)]
            )
            titles.append(prefix + "MS pred")
        if m.get("ms_target") is not None:
            rows.append([overlay_motion(f, t, alpha) for f, t in zip(frames, np.asarray(m["ms_target"]), strict=True)])
            titles.append(prefix + "MS target")
    grid = image_grid(rows, titles)
    lines = title.splitlines()
    if not lines:
        return grid
    return np.concatenate([_title_band(lines, grid.shape[1]), grid], axis=0)
