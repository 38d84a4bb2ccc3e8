"""CEUS clips: read a video (mp4/avi/...) or a folder of frames, find the enhancement phase
and sample T frames over it.

The paper keeps one static CEUS frame; the examination records a clip whose time-intensity
curve (wash-in, peak, wash-out) carries information a single frame misses. The phase is found
on the clip's mean-intensity curve: from the first frame that rises 10% of the way from the
baseline (first frame) to the peak, to the last frame still above that level. T > 1 frames are
spread evenly over it; T = 1 is the peak-enhancement frame, the one a sonographer would save.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
PHASE_LEVEL = 0.10  # fraction of the baseline-to-peak rise that opens/closes the phase


class ClipError(ValueError):
    """A clip that cannot be read or is too short; the message names the file."""


def is_clip(path: Path) -> bool:
    return path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES


def frame_files(folder: Path) -> list[Path]:
    """A frame folder's images in name order (zero-pad the numbers: frame_007.png)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)


def read_frames(path: Path | str) -> np.ndarray:
    """All frames of a clip as uint8 [N, H, W, 3]."""
    path = Path(path)
    try:
        if path.is_dir():
            files = frame_files(path)
            if not files:
                raise ClipError(f"{path}: folder holds no {'/'.join(FRAME_SUFFIXES)} frames")
            frames = []
            for f in files:
                with Image.open(f) as im:
                    frames.append(np.asarray(im.convert("RGB")))
            if len({fr.shape for fr in frames}) > 1:
                raise ClipError(f"{path}: frames differ in size")
            return np.stack(frames)
        import imageio.v3 as iio  # noqa: PLC0415  (video only)

        frames = iio.imread(path, plugin="FFMPEG")  # imageio-ffmpeg's bundled ffmpeg
    except ClipError:
        raise
    except Exception as e:  # noqa: BLE001  (any reader failure is an unreadable clip)
        first = (str(e).strip().splitlines() or [""])[0]
        raise ClipError(f"{path}: not a readable clip ({type(e).__name__}: {first})") from e
    frames = np.asarray(frames)
    if frames.ndim == 3:  # grayscale video
        frames = np.repeat(frames[..., None], 3, axis=-1)
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise ClipError(f"{path}: decoded to shape {frames.shape}, not a sequence of frames")
    return frames[..., :3].astype(np.uint8)


def intensity_curve(frames: np.ndarray) -> np.ndarray:
    """The clip's time-intensity curve: mean pixel value per frame."""
    return frames.reshape(len(frames), -1).mean(axis=1, dtype=np.float64)


def enhancement_phase(curve: np.ndarray) -> tuple[int, int]:
    """(first, last) frame index of the enhancement phase of a time-intensity curve, inclusive."""
    tic = np.asarray(curve, dtype=np.float64)
    peak = int(np.argmax(tic))
    level = tic[0] + PHASE_LEVEL * (tic[peak] - tic[0])
    above = np.flatnonzero(tic >= level)
    if tic[peak] <= tic[0] or not len(above):
        return 0, len(tic) - 1  # no rise: the whole clip
    return int(above[0]), int(above[-1])


def sample_indices(curve: np.ndarray, t: int, times_s: np.ndarray | None = None) -> np.ndarray:
    """T frame indices of a clip with this time-intensity curve: the peak frame for T = 1,
    else T spread evenly over the enhancement phase, in seconds when the frame times
    ``times_s`` are known (a DICOM cine's FrameTime/FrameTimeVector: frames need not be evenly
    spaced), in frames otherwise."""
    if t < 1:
        raise ValueError(f"clip_frames must be >= 1, got {t}")
    curve = np.asarray(curve, dtype=np.float64)
    if t == 1:
        return np.array([int(np.argmax(curve))])
    first, last = enhancement_phase(curve)
    if last - first + 1 < t:  # a short phase: widen it to T frames, within the clip
        first = max(0, min(first, len(curve) - t))
        last = first + t - 1
    times = None if times_s is None else np.asarray(times_s, dtype=np.float64)
    if times is None or np.allclose(np.diff(times), times[1] - times[0], rtol=1e-6, atol=0.0):
        # evenly timed frames: seconds and frames agree (and ties round alike)
        return np.round(np.linspace(first, last, t)).astype(int)
    targets = np.linspace(times[first], times[last], t)
    right = np.clip(np.searchsorted(times, targets), 1, len(times) - 1)
    nearest = np.where(targets - times[right - 1] <= times[right] - targets, right - 1, right)
    return np.maximum.accumulate(nearest)


def sample_clip(path: Path | str, t: int) -> np.ndarray:
    """T frames of the clip at ``path`` (uint8 [T, H, W, 3]); :class:`ClipError` if it has
    fewer than T frames."""
    frames = read_frames(path)
    check_length(path, len(frames), t)
    return frames[sample_indices(intensity_curve(frames), t)]


def check_length(path: Path | str, frames: int, t: int) -> None:
    """:class:`ClipError` naming the file when a clip of ``frames`` frames is shorter than T."""
    if frames < t:
        raise ClipError(
            f"{path}: clip has {frames} frame(s), fewer than the {t} the config asks for (data.clip_frames)"
        )


def encode_png(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()
