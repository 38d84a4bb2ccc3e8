"""Read speed of a long CEUS cine (issue 16): frames/s decoding a DICOM multi-frame file frame
by frame, and the time to sample a clip from it (one streaming pass for the time-intensity
curve, then the T chosen frames decoded again), for JPEG baseline (YBR_FULL_422) and
uncompressed RGB, with the peak memory the read adds (the cine is never held whole).

    python scripts/benchmark_dicom.py [--frames 600 --height 480 --width 640 --clip-frames 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from lnm_jax.data.pixels import dicom, sources
from lnm_jax.data.pixels.dicom import Box, ScanRegion


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=600)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--clip-frames", type=int, default=8)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    level = np.interp(np.arange(a.frames), [0, a.frames * 0.3, a.frames], [20, 200, 60])
    base = rng.integers(0, 56, (a.height, a.width, 3), dtype=np.uint8)
    frames = np.stack([np.clip(base + int(v), 0, 255).astype(np.uint8) for v in level])
    half = a.width // 2
    regions = [ScanRegion(Box(0, 40, half, a.height), 1, 1, (0.1, 0.1))]
    raw_mb = frames.nbytes / 2**20
    print(f"cine: {a.frames} frames of {a.width}x{a.height} RGB ({raw_mb:.0f} MB decoded)")
    with tempfile.TemporaryDirectory() as tmp:
        for compression in ("jpeg", "none"):
            path = Path(tmp) / f"{compression}.dcm"
            ds = dicom.new_dataset(frames, regions=regions, frame_time_ms=66.7, compression=compression)
            dicom.write_dataset(ds, path)
            src = sources.resolve(path, "ceus")
            t0 = time.perf_counter()
            n = sum(1 for _ in dicom.iter_frames(src.header))
            stream = n / (time.perf_counter() - t0)
            tracemalloc.start()
            t0 = time.perf_counter()
            clip = sources.read_clip(src, a.clip_frames)
            took = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            print(
                f"{src.header.transfer_syntax.split(' (')[0]:>26} ({path.stat().st_size / 2**20:.0f} MB file): "
                f"{stream:.0f} frames/s streamed; a {a.clip_frames}-frame clip sampled in {took:.2f} s "
                f"({a.frames / took:.0f} frames/s over the cine), peak memory {peak:.0f} MB; clip {clip.shape}"
            )


if __name__ == "__main__":
    main()
