"""CEUS clips: read a video (mp4/avi/...) or a folder of frames, find the enhancement phase
and sample T frames over it.

The paper keeps one static CEUS frame; the examination records a clip whose time-intensity
curve (wash-in, peak, wash-out) carries information a single frame misses. The phase is found
on the clip's mean-intensity curve: from the first frame that rises 10% of the way from the
baseline (first frame) to the peak, to the last frame still above that level. T > 1 frames are
spread evenly over it; T = 1 is the peak-enhancement frame, the one a sonographer would save.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import UnidentifiedImageError

from lnm_jax.data.pixels.decode import MAX_IMAGE_PIXELS, VIDEO_SUFFIXES, holds, image_size, over_black, read_image
from lnm_jax.data.pixels.placeholders import placeholder, stand_in

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
PHASE_LEVEL = 0.10  # fraction of the baseline-to-peak rise that opens/closes the phase
# A clip's frames are streamed, never held whole; these bound what one clip may cost to decode
# (a 248 KB mp4 can hold 300 frames of 1080p: 1.9 GB of pixels). Each frame is bounded by the
# still images' MAX_IMAGE_PIXELS.
MAX_CLIP_FRAMES = 10_000
MAX_CLIP_PIXELS = 10_000_000_000  # frames x width x height, decoded: 2 min of 1080p at 25/s is 6.2e9
# a video holding one frame longer than this (and three frame times) is said to (VideoInfo.hold_note)
HELD_FRAME_S = 0.25
# where ffmpeg's rate for a stream would read even its shortest frame more than this many times,
# the rate of that shortest frame is taken: ffmpeg timed a 30-frames/s recording with 1-ms jitter
# at 1000/s (each frame read 33 times, a 12-s clip refused as 11,850 frames), and 1- or 2-frame
# MPEG clips at 25/s at 50 (helper-71). (Not the median frame: a clip mostly at 10/s with a
# second at 50/s lost 40 of its 130 frames so, helper-72.)
REPEATS = 1.5


class ClipError(ValueError):
    """A clip that cannot be read or is too short; the message names the file."""


def is_clip(path: Path) -> bool:
    """Whether ``path`` names a clip: a video by its name, or a folder (of frames). A path that
    cannot be looked at (a folder above it that denies access) is no folder here: its reader
    says why (helper-121: the stat's PermissionError had stopped validate naming no row)."""
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return True
    try:
        return path.is_dir()
    except OSError:
        return False


def _natural_key(path: Path) -> tuple:
    """Name order with numbers compared as numbers: frame_2 < frame_10 < frame_1000."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name))


def frame_files(folder: Path) -> list[Path]:
    """A frame folder's images in natural name order (numbers compared as numbers, so that
    ``frame_1000`` follows ``frame_999`` whether or not the numbers are zero-padded).
    :class:`ClipError` naming them when two files are one place in that order (``frame_0.png``
    and ``frame_0.jpg``, ``frame_2`` and ``frame_02``): which comes first is the file system's
    whim (helper-57: both read, the clip a frame longer, unsaid); :class:`ClipError` naming one
    that is not a regular file (a FIFO named ``frame_002.png`` hung ``validate`` in its open,
    deaf to SIGTERM: helper-119), before any is opened. Files whose names begin with '.' are
    not frames (macOS's AppleDouble ``._frame_000.png`` beside each frame, ``.DS_Store``).
    Refused, naming the file (helper-121: each had passed, the clip read a frame short or long,
    unsaid): a frame's name with another ending after it (``frame_004.png.part``,
    ``.crdownload``: a download or copy left unfinished, its frame missing; what stands in a
    missing frame's place named as :func:`lnm_jax.data.pixels.placeholders.stand_in` names it,
    a DVC or iCloud placeholder too), a frame named as a
    copy of another (``frame_003 (1).png``, ``frame_003 - Copy.png``), a frame missing from a
    numbering that is regular otherwise (:func:`_missing_frame`); and a folder that cannot be
    listed, in a line."""
    try:
        listed = list(folder.iterdir())
    except OSError as e:
        raise ClipError(f"{folder}: the frame folder cannot be listed ({e.strerror or e})") from e
    for p in listed:  # a frame's stand-in (a partial download, a DVC or iCloud placeholder)
        if (found := stand_in(p)) and _frame_named(found[0]) and not (folder / found[0]).exists():
            raise ClipError(f"{folder}: frame {found[0]} is missing: {found[1]}")
    entries = [p for p in listed if not p.name.startswith(".")]
    if unfinished := [p for p in entries if p.suffix.lower() not in FRAME_SUFFIXES and _frame_named(p.stem)]:
        raise ClipError(
            f"{folder}: {unfinished[0].name} is a frame's name with another ending: a download or copy left "
            "unfinished? keep only whole frames in a clip's folder"
        )
    files = sorted((p for p in entries if p.suffix.lower() in FRAME_SUFFIXES), key=_natural_key)
    if odd := [f for f in files if not f.is_file()]:
        why = placeholder(odd[0]) or "not a file (a folder, FIFO or device)"
        raise ClipError(f"{folder}: frame {odd[0].name} is {why}")
    names = {f.name.lower() for f in files}
    for f in files:
        if (copy := _COPY.fullmatch(f.stem)) and (copy.group(1) + f.suffix).lower() in names:
            raise ClipError(
                f"{folder}: {f.name} is named as a copy of {copy.group(1) + f.suffix} (a second download or copy?): "
                "which is the frame? keep one"
            )
    by_place: dict[tuple, list[Path]] = {}
    for f in files:
        by_place.setdefault(_frame_place(f), []).append(f)
    if twice := [group for group in by_place.values() if len(group) > 1]:
        said = "; ".join(" and ".join(f.name for f in g) for g in twice[:3]) + ("; ..." if len(twice) > 3 else "")
        raise ClipError(f"{folder}: two files for one frame ({said}): which is the frame? keep one of each")
    if gap := _missing_frame(files):
        raise ClipError(f"{folder}: {gap}")
    return files


# a name a browser or file manager gives a second copy of a file: 'x (1)', 'x - Copy', 'x copy 2'
_COPY = re.compile(r"(.+?)(?: ?\(\d+\)| - copy(?: \(\d+\))?| copy(?: \d+)?)", re.IGNORECASE)


def _frame_named(name: str) -> bool:
    """Whether ``name`` (a file's name less its last ending) ends as a frame's does (``.png``)."""
    return Path(name).suffix.lower() in FRAME_SUFFIXES


def _missing_frame(files: list[Path]) -> str | None:
    """Words for a frame missing from a folder whose frames are numbered alike (one name with
    its last number changing: ``frame_001.png``, ``frame_002.png``, ...) at a regular step but
    for one or a few gaps of whole steps, at most a tenth of them (a frame lost in a copy:
    helper-121's ``frame_004.png`` deleted read as a clip a frame short, its timing shifted);
    None otherwise: frames numbered irregularly throughout (key frames chosen by hand) or named
    each its own way are read as they are."""
    if len(files) < 3:
        return None
    shapes = {re.sub(r"\d+(?=\D*$)", "#", f.name.lower()) for f in files}
    counters = [re.findall(r"\d+", f.name) for f in files]
    if len(shapes) != 1 or not all(counters):
        return None
    numbers = [int(c[-1]) for c in counters]
    steps = [b - a for a, b in zip(numbers, numbers[1:])]
    step = max(set(steps), key=steps.count)
    gaps = [k for k, d in enumerate(steps) if d != step]
    if not gaps or step <= 0 or len(gaps) > max(1, len(steps) // 10) or any(steps[k] % step for k in gaps):
        return None
    k = gaps[0]
    lost = sum(steps[g] // step - 1 for g in gaps)
    return (
        f"frame number {numbers[k] + step} is missing between {files[k].name} and {files[k + 1].name} "
        f"({lost} missing in all; the others are numbered {step} apart): a frame lost in a copy? the clip would "
        "read short, its timing shifted; restore it, or number the frames without the gap where it is meant"
    )


def _frame_place(path: Path) -> tuple:
    """Where a frame file stands in its clip: the numbers in its name, as numbers (``frame_1``,
    ``frame_01``, ``1``, ``Frame_1.jpg.png`` alike: helper-58 found a converter's appended
    suffix, another letter case and two naming schemes in one folder read as more frames); its
    name without image suffixes, in lower case, where it holds no number."""
    numbers = tuple(int(n) for n in re.findall(r"\d+", path.name))
    if numbers:
        return numbers
    stem = path.name.lower()
    while Path(stem).suffix in FRAME_SUFFIXES:
        stem = Path(stem).stem
    return (stem,)


def frame_name(index: int, count: int) -> str:
    """The file name of frame ``index`` of a ``count``-frame clip written by this project:
    zero-padded to the clip's length (at least 3 digits), so that any name sort keeps order."""
    return f"frame_{index:0{max(3, len(str(max(count - 1, 0))))}d}.png"


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What a video declares, read without decoding more than its first frame: (width, height)
    as shown, the frames/s its frames are read at (:func:`_frame_rate`; the container's average
    where ffmpeg gives none), the seconds its video stream spans (:func:`_video_times`: its first
    frame's start to its last one's, and one frame time; the container's duration where the
    stream gives none), the frame count they imply (None when not declared), whether its pixels
    carry alpha (:data:`ALPHA_FORMATS`), the exact rate (a fraction: 24000/1001, where ``fps``
    is 23.976...) its frames are decoded at, and its longest interval between frames
    (:meth:`hold_note`)."""

    size: tuple[int, int]
    fps: float | None
    duration_s: float | None
    alpha: bool = False
    decoder: str | None = None  # an ffmpeg decoder to read it with, where its own default drops alpha
    rate: Fraction | None = None
    # (seconds, from when) of the longest interval between two frames, held as players hold it
    longest_hold: tuple[float, float] | None = None

    def hold_note(self) -> str | None:
        """A line where the video holds one frame for over :data:`HELD_FRAME_S` and three frame
        times (a group of pictures lost with its timestamps kept, a recorder that stalled): it
        is read as players show it, the frame before held, and nothing else says so."""
        if not self.longest_hold or not self.fps:
            return None
        held, at = self.longest_hold
        if held <= max(HELD_FRAME_S, 3 / self.fps):
            return None
        return (
            f"a video holds one frame over a gap: {held:.2f} s from {at:.2f} s ({held * self.fps:.0f} frame times), "
            "read as players show it, that frame held (a recorder that writes only changes, or frames lost?)"
        )

    @property
    def declared_frames(self) -> int | None:
        if self.fps and self.duration_s and np.isfinite(self.fps * self.duration_s):
            return round(self.fps * self.duration_s)
        return None


# the prefix ffmpeg gives a log line: the component that speaks, "[h264 @ 0x55...]"
_LOG_PREFIX = r"\[[^\]]+ @ 0x[0-9a-fA-F]+\]"


def _reader_failure(path: Path, e: Exception) -> ClipError:
    """:class:`ClipError` naming the file, in ffmpeg's own first words about it where the reader's
    error carries ffmpeg's log (an MP4 cut before its index: 'moov atom not found', where the
    reader says 'Could not load meta information'), else the reader's first line (a Git LFS
    or git-annex pointer, or a file of another kind, is said before ffmpeg reads it:
    :func:`_video_info`)."""
    lines = str(e).strip().splitlines() or [""]
    said = [m.group(1) for line in lines if (m := re.match(rf"^{_LOG_PREFIX}\s*(.+)$", line))]
    # (not a format's guess, "misdetection possible", nor the generic "Error opening input", where more is said)
    said = next((w for w in said if not re.search(r"misdetection possible|^Error opening input", w)), None) or (
        said[0] if said else None
    )
    why = f"ffmpeg: {said}" if said else f"{type(e).__name__}: {lines[0]}"
    return ClipError(f"{path}: not a readable clip ({why})")


# imageio-ffmpeg starts ffmpeg with preexec_fn=os.setpgrp (to keep Ctrl-C from it), which
# forks this multithreaded process and runs Python in the child: a known hang (imageio-ffmpeg
# issue #58; helper-57's pretraining stuck on an mp4 at full CPU, once in four) and JAX's
# "os.fork() was called" warning on every video read. Its own switch leaves preexec_fn out, so
# that ffmpeg starts as any subprocess does; Ctrl-C then reaches ffmpeg too, which stops with
# the command. A value the user set is kept.
FFMPEG_NO_FORK_HOOK = "IMAGEIO_FFMPEG_NO_PREVENT_SIGINT"
# A video's frames as a player shows them: ffmpeg applies a container's display rotation itself
# (a phone's clip), and this filter stretches a stream whose pixels are not square (its sample
# aspect ratio: a PAL DVD recorder's 720x576 at 16:15 is shown 768x576) to its display width, as
# players do (bicubic, ffmpeg's scaler; square pixels pass unchanged, bit for bit). Without it
# such a clip was read narrower than any viewer shows it, and a crop box drawn on the shown
# frame landed elsewhere.
DISPLAY_FILTER = ("-vf", "scale=w='max(1,round(iw*sar))':h=ih,setsar=1")
# ffmpeg's evenly timed output (its default for raw output, said here): the probe's, whose rate
# is the stream's as ffmpeg guesses it from its timestamps and codec (:func:`_frame_rate`)
FRAME_TIMING = ("-fps_mode", "cfr")
# the stream read: the first video stream that is not a cover picture (the probe and the decoder alike)
VIDEO_STREAM = ("-map", "0:V:0")
# imageio-ffmpeg's notice (a logging warning on every read) that the frames differ in size from
# the stream's stored size: the rotation and DISPLAY_FILTER are meant to make them
SIZE_NOTICE = "is different from the source frame size"


class _SizeNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return SIZE_NOTICE not in record.getMessage()


# ffmpeg's pixel formats with an alpha channel (libavutil's AV_PIX_FMT_FLAG_ALPHA), as its stream
# line names them: such a video's frames are read with their alpha and composited over black, as
# a frame folder's transparent PNGs are (helper-63: the same frames read 255 where transparent
# as a video, 0 as a folder)
ALPHA_FORMATS = re.compile(r"(rgba|bgra|argb|abgr|yuva|ya8|ya16|gbrap|rgbaf|ayuv|vuya)")
# a stream's colour tags that players convert for the display, each its own way, so that its
# stored values are not what they show: HDR transfer functions (tone mapping) and primaries
# wider than BT.709/sRGB's, as a PNG's cICP of them is refused (png.cicp_refusal)
HDR_TRANSFERS = {"smpte2084": "PQ", "arib-std-b67": "HLG"}
WIDE_PRIMARIES = ("bt2020", "smpte431", "smpte432")


def colour_refusal(pix_fmt: str) -> str | None:
    """Why a video whose stream ffmpeg describes as ``pix_fmt`` (its stream line's pixel
    format with "(range, matrix/primaries/transfer, ...)", as imageio-ffmpeg's metadata holds
    it) is not read, or None: an HDR transfer (:data:`HDR_TRANSFERS`) or wide-gamut primaries
    (:data:`WIDE_PRIMARIES`). Untagged ("unknown") streams are read as BT.709, as players do."""
    tags = next((t.split("/") for t in re.findall(r"[\w-]+/[\w-]+/[\w-]+", pix_fmt)), None)
    if tags is None:
        return None
    _, primaries, transfer = tags
    if transfer in HDR_TRANSFERS:
        said = f"transfer function {transfer} ({HDR_TRANSFERS[transfer]}, an HDR video)"
    elif primaries in WIDE_PRIMARIES:
        said = f"colour primaries {primaries} (wider than BT.709)"
    else:
        return None
    return (
        f"its stream is tagged {said}: players convert it for the display, each its own way (tone mapping), "
        "so its stored values are not the picture they show; export the clip as SDR BT.709"
    )


# VP8/VP9 (WebM) carry alpha beside the picture, flagged in the container ("alpha_mode: 1"):
# ffmpeg's own decoders drop it and report yuv420p; libvpx's read it (yuva420p) (helper-69: a
# transparent half read as stored white)
VPX_ALPHA_DECODERS = {"vp8": "libvpx", "vp9": "libvpx-vp9"}


def _ffmpeg(args: list[str]) -> subprocess.CompletedProcess:
    import imageio_ffmpeg  # noqa: PLC0415  (video only)

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", *args]
    return subprocess.run(command, capture_output=True, text=True, errors="replace", check=False)


def _probe(path: Path) -> subprocess.CompletedProcess:
    """ffmpeg's account of ``path`` with its first frame decoded at ffmpeg's own even timing
    (:data:`FRAME_TIMING`) into a frame hash: the input's stream lines (stderr) and the output's
    time base, one frame's time (stdout, :func:`_frame_rate`); ~10 ms."""
    return _ffmpeg(["-i", str(path), *VIDEO_STREAM, *FRAME_TIMING, "-frames:v", "1", "-f", "framehash", "-"])


def _time_base(text: str) -> Fraction | None:
    found = re.search(r"^#tb 0: (\d+)/(\d+)\s*$", text, re.MULTILINE)
    num, den = (int(found.group(1)), int(found.group(2))) if found else (0, 0)
    return Fraction(num, den) if num and den else None


def _frame_rate(probe: subprocess.CompletedProcess) -> Fraction | None:
    """The exact frames/s ffmpeg gives a stream it times evenly (the inverse of its ``probe``'s
    output time base), None where it gives none. This, not the container's average rate, is
    the stream's rate: a variable-rate phone clip averaged 26.87 frames/s and ffmpeg timed it
    at 30; an AVI said '600 fps' and held 10 frames a second; a raw H.264 stream '25 fps'
    whose parameter sets say 10; and the rate as printed loses digits (23.98 for 24000/1001)."""
    tb = _time_base(probe.stdout)
    return 1 / tb if tb else None


_NO_PTS = -(2**63)  # AV_NOPTS_VALUE: a packet without its own time (MPEG program streams, AVI)


def _video_times(path: Path) -> tuple[Fraction, Fraction | None, tuple[float, float]] | None:
    """(seconds from the video stream's first shown frame to its last one's start, its shortest
    frame time (the shortest interval between frames' start times; a lone frame's own duration;
    None where neither is known), (the longest interval, in seconds, and when it starts, from the
    first frame)), from its packets' timestamps (a stream copy, nothing decoded: ffmpeg's frame
    CRCs), those an edit list leaves out not counted; None where it has no packets. The
    container's duration is its longest stream's: 6 s for 4 s of video under 6 s of audio (150
    frames said for 100); a packet's own duration is its step in decoding order (a B-frame's
    can carry a still period of a variable-rate clip) or 0 (MPEG-TS)."""
    # (+genpts: a packet without a presentation time, as MPEG program streams and AVI have, is given one)
    command = ["-v", "error", "-fflags", "+genpts", "-i", str(path), *VIDEO_STREAM, "-c", "copy", "-f", "framecrc", "-"]
    out = _ffmpeg(command).stdout
    tb, shown, last = _time_base(out), [], 0
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if line.startswith("#") or len(fields) < 4:
            continue
        flags = next((int(f[2:], 16) for f in fields[6:] if f.startswith("F=")), 0)
        dts, pts, last = int(fields[1]), int(fields[2]), int(fields[3])
        pts = dts if pts == _NO_PTS else pts  # (none generated: a raw stream's frames, at their decoding times)
        if not flags & 0x4 and pts != _NO_PTS:  # (AV_PKT_FLAG_DISCARD: before an edit list's start, never shown)
            shown.append(pts)
    if not tb or not shown:
        return None
    shown.sort()
    steps = [b - a for a, b in zip(shown, shown[1:])]
    frame = min(steps) if steps else last
    held, at = max(zip(steps, shown), key=lambda g: g[0], default=(0, shown[0]))
    return (
        (shown[-1] - shown[0]) * tb,
        frame * tb if frame > 0 else None,
        (float(held * tb), float((at - shown[0]) * tb)),
    )


def _mapped_stream(probe: subprocess.CompletedProcess) -> tuple[str, str] | None:
    """(codec, pixel format) of the stream ffmpeg's ``probe`` read (:data:`VIDEO_STREAM`), from
    its input stream line, as imageio-ffmpeg parses a stream line; None where not found. (The
    reader's own metadata are the first video stream's: a cover picture stored first.)"""
    mapped = re.search(r"Stream #0:(\d+) -> #0:0", probe.stderr)
    pattern = rf"^\s*Stream #0:{mapped.group(1)}(?!\d)[^\n]*?Video: ([^\n]*)$" if mapped else None
    line = re.search(pattern, probe.stderr, re.MULTILINE) if pattern else None
    if line is None:
        return None
    parts = re.split(r",\s*(?![^()]*\))", line.group(1))
    return parts[0].split(" ", 1)[0].strip(), parts[1].strip() if len(parts) > 1 else ""


def _vpx_alpha_decoder(probe: subprocess.CompletedProcess, codec: str) -> str | None:
    """libvpx's decoder for a VP8/VP9 stream whose container flags alpha (in ffmpeg's ``probe``
    of it), else None."""
    decoder = VPX_ALPHA_DECODERS.get(codec.strip(", "))
    if decoder is None:
        return None
    return decoder if re.search(r"^\s*alpha_mode\s*:\s*1\s*$", probe.stderr, re.MULTILINE) else None


def _ffmpeg_frames(path: Path) -> Iterator:
    """imageio-ffmpeg's reader of ``path`` through its bundled ffmpeg, with :data:`DISPLAY_FILTER`,
    8-bit RGB, started without a fork hook (:data:`FFMPEG_NO_FORK_HOOK`): a generator that
    first yields the stream's metadata ('size' (width, height) as shown, 'fps', 'duration',
    'pix_fmt'), then each frame's bytes; closing it stops ffmpeg. (:func:`video_info` reads its
    metadata; frames are decoded by :func:`_decoded`.)"""
    import imageio_ffmpeg  # noqa: PLC0415  (video only)

    os.environ.setdefault(FFMPEG_NO_FORK_HOOK, "1")
    notices = logging.getLogger("imageio_ffmpeg")
    if not any(isinstance(f, _SizeNotice) for f in notices.filters):
        notices.addFilter(_SizeNotice())
    params = [*VIDEO_STREAM, *DISPLAY_FILTER]  # (the stream the decoder reads: its size as shown)
    return imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", bits_per_pixel=24, output_params=params)


def video_info(path: Path | str) -> VideoInfo:
    """A video's :class:`VideoInfo`: its size as shown (rotated, pixels made square), the rate
    its frames are read at and its video stream's span, its alpha; :class:`ClipError` naming
    the file when it is unreadable, tagged with colours players convert
    (:func:`colour_refusal`), or declares more than :data:`MAX_CLIP_FRAMES` frames or
    :data:`MAX_CLIP_PIXELS` pixels. Three ffmpeg runs, none decoding past the first frame; kept
    for the file as it is (its size and modification time), as validate and each read ask again."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return _video_info.__wrapped__(path, 0, 0)  # (the reader says what is wrong with it)
    return _video_info(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _video_info(path: Path, size: int, mtime_ns: int) -> VideoInfo:
    # a pointer, or a file of another kind (an HTML page named .mp4 had been "moov atom not found", as
    # a cut MP4 is; an SVG with a size, which ffmpeg decodes, a clip of one frame), before ffmpeg reads it
    if why := placeholder(path):
        raise ClipError(f"{path}: {why}")
    if what := holds(path, text=True):
        raise ClipError(f"{path}: not a video: {what}")
    try:
        reader = _ffmpeg_frames(path)
        try:
            meta = next(reader)
        finally:
            reader.close()
    except Exception as e:  # noqa: BLE001  (any reader failure is an unreadable clip)
        raise _reader_failure(path, e) from e
    probe = _probe(path)
    codec, pix_fmt = _mapped_stream(probe) or (str(meta.get("codec", "")), str(meta.get("pix_fmt", "")))
    if why := colour_refusal(pix_fmt):
        raise ClipError(f"{path}: {why}")
    fps, duration = meta.get("fps"), meta.get("duration")
    size = tuple(int(v) for v in meta.get("size", (0, 0)))
    decoder = _vpx_alpha_decoder(probe, codec)
    alpha = bool(ALPHA_FORMATS.match(pix_fmt)) or decoder is not None
    rate, span, hold = _frame_rate(probe), duration or None, None
    if times := _video_times(path):
        first_to_last, frame, hold = times
        if frame and (not rate or rate * frame > REPEATS):  # every frame read more than once: its own rate
            rate = 1 / frame
        span = float(first_to_last + (1 / rate if rate else 0)) or span
    info = VideoInfo(size, float(rate) if rate else fps or None, span, alpha, decoder, rate, hold)
    _check_budget(path, info.declared_frames or 0, *info.size)
    return info


def _check_budget(path: Path, frames: int, width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ClipError(
            f"{path}: frames are {width}x{height}, over the limit of {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels "
            "(decode.MAX_IMAGE_PIXELS)"
        )
    if frames > MAX_CLIP_FRAMES:
        raise ClipError(
            f"{path}: clip has {frames} frames, over the limit of {MAX_CLIP_FRAMES} (clips.MAX_CLIP_FRAMES)"
        )
    if frames * width * height > MAX_CLIP_PIXELS:
        raise ClipError(
            f"{path}: clip is {frames} frames of {width}x{height} = {frames * width * height / 1e9:.1f} gigapixels, "
            f"over the limit of {MAX_CLIP_PIXELS / 1e9:.0f} (clips.MAX_CLIP_PIXELS)"
        )


def _size_error(path: Path, where: str, size: tuple[int, int], first: tuple[int, int]) -> ClipError:
    return ClipError(
        f"{path}: frames differ in size: {where} is {size[0]}x{size[1]}, the first is {first[0]}x{first[1]}"
    )


def check_frame_folder(path: Path) -> int:
    """A frame folder's frame count, checked from the frames' headers without decoding them
    (each frame's own check is the caller's): :class:`ClipError` naming the file when it holds
    no frames, frames differ in size (as displayed) or it exceeds the clip limits."""
    files = frame_files(path)
    if not files:
        raise ClipError(f"{path}: folder holds no {'/'.join(FRAME_SUFFIXES)} frames")
    first = image_size(files[0])
    for f in files[1:]:
        if (size := image_size(f)) != first:
            raise _size_error(path, f.name, size, first)
    _check_budget(path, len(files), *first)
    return len(files)


def iter_frames(path: Path | str) -> Iterator[np.ndarray]:
    """Every frame of a clip in order as float32 [H, W, 3] in [0, 1], one decoded at a time:
    a frame folder's files through :func:`lnm_jax.data.pixels.decode.read_image` (any bit
    depth, EXIF orientation), a video's frames through ffmpeg (8-bit RGB, as a player shows
    them: :data:`DISPLAY_FILTER`; one with an alpha channel composited over black, as a still
    is). :class:`ClipError`
    naming the file (and the frame) when a frame cannot be read, frames differ in size, or
    the clip exceeds :data:`MAX_CLIP_FRAMES` / :data:`MAX_CLIP_PIXELS`."""
    return (frame for frame, _ in frames_as_stored(path, stored=False))


def frames_as_stored(path: Path | str, stored: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Each frame of :func:`iter_frames` with, for a video that has an alpha channel, the frame
    as stored: float32 [H, W, 4] RGBA in [0, 1], its colours before compositing and its
    opacity (what a check of transparent pixels reads); None for any other frame (a frame
    folder's files are read as stills are, from their own files), or where not ``stored``."""
    path = Path(path)
    shape = None
    for k, (frame, rgba) in enumerate(_raw_frames(path, stored)):
        if shape is None:
            shape = frame.shape
        elif frame.shape != shape:
            where = frame_files(path)[k].name if path.is_dir() else f"frame {k}"
            raise _size_error(path, where, (frame.shape[1], frame.shape[0]), (shape[1], shape[0]))
        _check_budget(path, k + 1, shape[1], shape[0])
        yield frame, rgba
    if shape is None:
        what = f"folder holds no {'/'.join(FRAME_SUFFIXES)} frames" if path.is_dir() else "video holds no frames"
        raise ClipError(f"{path}: {what}")


def _raw_frames(path: Path, stored: bool) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    if path.is_dir():
        for f in frame_files(path):
            try:
                yield read_image(f), None
            except (OSError, UnidentifiedImageError, ValueError) as e:
                raise ClipError(f"{path}: frame {f.name} is not a readable image ({type(e).__name__}: {e})") from e
        return
    info = video_info(path)  # the declared budget, colours and shown size, before anything is decoded
    try:
        for frame in _decoded(path, info):
            frame = frame.astype(np.float32) / np.float32(255.0)
            if info.alpha:
                yield over_black(frame), frame if stored else None
            else:
                yield frame, None
    except ClipError:
        raise
    except Exception as e:  # noqa: BLE001  (any reader failure is an unreadable clip)
        raise _reader_failure(path, e) from e


def _evenly_timed(info: VideoInfo) -> list[str]:
    """ffmpeg's options for a video's frames as a player shows them (:data:`DISPLAY_FILTER`),
    evenly timed at ``info.rate`` from its first frame (the ``fps`` filter), each the frame
    shown then: a variable-rate clip (a phone's), or one with a gap, holds a frame as a player
    does, so that frames sampled evenly are evenly spaced in time; and a video that starts after
    its audio starts at its first frame (ffmpeg's own even timing had repeated it 13 times
    over a 0.5-s audio lead). Without a rate, ffmpeg's own (:data:`FRAME_TIMING`)."""
    display = DISPLAY_FILTER[1]
    if info.rate is None:
        return ["-vf", display, *FRAME_TIMING]
    return ["-vf", f"{display},fps={info.rate.numerator}/{info.rate.denominator}", "-fps_mode", "passthrough"]


def _decoded(path: Path, info: VideoInfo) -> Iterator[np.ndarray]:
    """A video's frames as uint8 [H, W, 3] (RGBA [H, W, 4] where ``info.alpha``) at the shown
    size ``info.size``, through the bundled ffmpeg with :data:`DISPLAY_FILTER`, its decoder
    told to stop at the first error it finds (``-err_detect explode -xerror``), and any error it
    logs while going on (a stream cut before its first keyframe: the frames up to it dropped,
    helper-69): :class:`ClipError` with the decoder's words then. Frames before a stream's first
    keyframe are handed on (``-flags2 +showall``), so that the decoder flags them corrupt: an
    H.264 clip whose keyframe was lost after its parameter sets had them dropped in silence (20
    of 29 frames read, each shown 0.9 s early). Without it ffmpeg conceals a
    damaged frame (from its neighbours, each player its own way) and goes on, or ends the clip
    early, in silence (helper-63's class, a JPEG whose data libjpeg warns of; 200 wiped bytes of
    an H.264 clip had changed all 20 frames, by 10 grey levels on average, or dropped frames).
    ffmpeg starts as any subprocess does (no fork hook: :data:`FFMPEG_NO_FORK_HOOK`); leaving
    early stops it."""
    import tempfile  # noqa: PLC0415

    import imageio_ffmpeg  # noqa: PLC0415  (video only)

    (width, height), channels = info.size, 4 if info.alpha else 3
    # each line tagged with its level: the errors, and the one debug line that says a reference was lost
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "level+debug", "-err_detect", "explode"]
    command += ["-flags2", "+showall"]  # (no frame left out before the first keyframe: flagged corrupt instead)
    command += ["-c:v", info.decoder] if info.decoder else []
    command += ["-i", str(path), *VIDEO_STREAM, *_evenly_timed(info), "-xerror", "-f", "rawvideo"]
    command += ["-pix_fmt", "rgba" if info.alpha else "rgb24", "-"]
    size, count, short = width * height * channels, 0, False
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        try:
            while data := process.stdout.read(size):
                if len(data) < size:
                    short = True
                    break
                count += 1
                yield np.frombuffer(data, np.uint8).reshape(height, width, channels)
            code = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()
        log.seek(0)
        text = log.read().decode("utf-8", "replace")
        lines = _errors(text)
    if changed := _size_change(text):
        (w0, h0), (w1, h1) = changed
        raise ClipError(
            f"{path}: frames differ in size: the stream's frames change from {w0}x{h0} to {w1}x{h1} (streams joined "
            f"without re-encoding?); ffmpeg scales them to the first size, players each their own way: export the "
            f"clip again at one size, or as a frame folder"
        )
    if code == 0 and not short and not lines:
        return
    said = _decoder_words(lines) or f"exit status {code}"
    where = (
        f"while decoding it ({count} frame(s) decoded)" if code == 0 and not short else f"after {count} whole frame(s)"
    )
    raise ClipError(
        f"{path}: damaged video: ffmpeg reports {said!r} {where}: players conceal a damaged frame each "
        "their own way (or skip it, or end the clip there); export the clip again"
    )


# H.264's word (at debug level) for a frame whose predecessor in decoding order is missing
# ("Frame num gap <frame_num> <the previous one>"): a keyframe lost mid-stream with the timestamps
# kept (helper-70) had the frames after it decoded from the wrong reference in silence, 7.6-12.7
# grey levels off on average
_WHO = rf"^((?:{_LOG_PREFIX}\s*)*)"  # a log line's prefixes, before its level tag
LOST_REFERENCE = re.compile(_WHO + r"\[debug\] Frame num gap (-?\d+) (-?\d+)")
_DAMAGE_LEVEL = re.compile(_WHO + r"\[(?:error|fatal|panic)\] ")


# ffmpeg's words for a stream whose frames change their parameters midway (its filter graph set
# up again, output frames scaled to the first size: helper-121's two H.264 streams of 64x64 and
# 96x80 joined into one MP4 had trained as 64x64 frames in silence), and the input stream's line
_RECONFIGURED = re.compile(r"Reconfiguring filter graph because video parameters changed to .*?, (\d+)x(\d+)")
_INPUT_VIDEO = re.compile(r"Stream #0:\d+.*?: Video: .*?, (\d+)x(\d+)[ ,]")


def _size_change(log: str) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(the input stream's frame size, the first other size its frames change to) where an
    ffmpeg log (:func:`_decoded`'s) says its frames change size midway; None otherwise (a change
    of pixel format or colour alone sets the graph up again at the same size)."""
    start = log.find("Input #0")
    first = _INPUT_VIDEO.search(log, max(start, 0))
    if first is None:
        return None
    size = (int(first.group(1)), int(first.group(2)))
    for m in _RECONFIGURED.finditer(log):
        if (later := (int(m.group(1)), int(m.group(2)))) != size:
            return size, later
    return None


def _errors(log: str) -> list[str]:
    """The lines of an ffmpeg log (``-loglevel level+debug``) that say its input is damaged,
    their level tags left out: those at error level or above, then :data:`LOST_REFERENCE`'s, in
    words ("frame_num 1 follows 13: a frame it refers to was lost")."""
    errors, lost = [], []
    for line in log.splitlines():
        if found := _DAMAGE_LEVEL.match(line):
            errors.append((found.group(1) + line[found.end() :]).strip())
        elif found := LOST_REFERENCE.match(line):
            where, now, before = found.groups()
            lost.append(f"{where}frame_num {now} follows {before}: a frame it refers to was lost (H.264 frame num gap)")
    return errors + lost


# ffmpeg's own lines around a decoder's report (which say only that the decoder failed)
_FFMPEG_GENERIC = re.compile(
    r"Error (processing|submitting) packet (in|to) decoder|Task finished with error|Last message repeated|"
    r"Terminating thread"
)


def _decoder_words(lines: list[str]) -> str | None:
    """The decoder's own report among ffmpeg's error lines: the first that is not one of
    ffmpeg's generic lines (:data:`_FFMPEG_GENERIC`), preferring one that says "error", as
    "h264: <words>" (the last bracketed "[name @ 0x...]" prefix's name, no addresses)."""
    own = [line for line in lines if not _FFMPEG_GENERIC.search(line)] or lines
    if not own:
        return None
    said = next((line for line in own if "error" in line.lower()), own[0])
    names = re.findall(r"\[(?:[\w#:]+[:/])?([\w,-]+) @ 0x[0-9a-fA-F]+\]", said)  # (dec:h264, in#0/matroska,webm)
    words = re.sub(rf"^(?:{_LOG_PREFIX}\s*)+", "", said)
    return f"{names[-1]}: {words}" if names else words


def read_frames(path: Path | str, indices=None) -> np.ndarray:
    """Frames of a clip as float32 [N, H, W, 3] in [0, 1]: all of them, or those at
    ``indices`` (in the order given, repeats allowed), decoded one at a time so that only the
    kept frames are held."""
    path = Path(path)
    if indices is None:
        return np.stack(list(iter_frames(path)))
    wanted = [int(i) for i in indices]
    if path.is_dir():
        files = frame_files(path)
        if wanted and max(wanted) >= len(files):
            raise ClipError(f"{path}: frame {max(wanted)} asked for, the clip has {len(files)}")
        frames = {i: read_image(files[i]) for i in set(wanted)}
    else:
        need, frames = set(wanted), {}
        for k, frame in enumerate(iter_frames(path)):
            if k in need:
                frames[k] = frame
                if len(frames) == len(need):
                    break
        if len(frames) < len(need):
            raise ClipError(f"{path}: frame {max(need - set(frames))} asked for, the clip decodes fewer frames")
    return np.stack([frames[i] for i in wanted])


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


def check_length(path: Path | str, frames: int, t: int) -> None:
    """:class:`ClipError` naming the file when a clip of ``frames`` frames is shorter than T."""
    if frames < t:
        raise ClipError(
            f"{path}: clip has {frames} frame(s), fewer than the {t} the config asks for (data.clip_frames)"
        )
