"""One writer for a loop's metrics: JSON lines, TensorBoard and the console.

Only process 0 of a multi-host job writes files or prints; the others hold a writer that does
nothing, so a loop calls it unconditionally. While a writer is open, the checkpoint library's
routine messages ("Waiting for previous save to complete", ...) go to the run's log file, not
to the console, where they would interleave with the progress bars.
"""

from __future__ import annotations

import logging
import math
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

from tqdm import tqdm

from lnm_jax.fileio import (
    SEAL_KEY,
    DamagedFileError,
    QuietFileHandler,
    is_int,
    is_real,
    json_digest,
    json_text,
    read_json_lines,
    sealed,
    warn_once,
)

QUIET_LOGGERS = ("orbax",)  # logger-name prefixes kept off the console below ERROR


class _QuietLibraries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        noisy = record.name.startswith(QUIET_LOGGERS) or "orbax" in record.pathname
        return record.levelno >= logging.ERROR or not noisy


class MetricWriter:
    """``write(record)`` appends one JSON line, adds every finite float to TensorBoard at
    ``record[step_key]``, and ``print`` writes a console line above any progress bar."""

    def __init__(
        self,
        history: Path,
        tensorboard: Path | None = None,
        log_file: Path | None = None,
        *,
        step_key: str = "epoch",
        primary: bool = True,
    ):
        self.history = Path(history)
        self.step_key = step_key
        self.primary = primary
        self._tb = None
        self._earlier: list[Path] = []
        self._filter = _QuietLibraries()
        self._file_handler = None
        if not primary:
            return
        if tensorboard is not None:
            # the event files before this writer's: replaced by the history at rewrite
            self._earlier = sorted(Path(tensorboard).glob("events.out.tfevents.*"))
            # a name of its own: two writers in one second would share tensorboardX's default one
            self._tb = _summary_writer()(str(tensorboard), filename_suffix=f".{uuid.uuid4().hex[:8]}")
        for handler in _console_handlers():
            handler.addFilter(self._filter)
        if log_file is not None:
            self._file_handler = QuietFileHandler(log_file)
            self._file_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
            logging.getLogger().addHandler(self._file_handler)

    def rewrite(self, records: list[Mapping]) -> None:
        """Replaces the JSON-lines history with ``records`` (a resumed run keeps the epochs it
        had finished before its checkpoint), and TensorBoard's events with theirs: the event
        files of earlier writers are deleted and ``records`` written to this one's. tensorboardX
        holds events up to 120 s before writing them (its ``flush`` does not drain them), so a
        run killed and resumed had kept events of the resumed epochs only (helper-81), and one
        resumed from an earlier checkpoint the epochs it trains again twice."""
        if not self.primary:
            return
        self.history.write_text(history_text(records), encoding="utf-8")
        if self._tb is not None:
            for old in self._earlier:
                old.unlink(missing_ok=True)
            self._earlier = []
            for record in records:
                self._scalars(record)

    def write(self, record: Mapping) -> None:
        if not self.primary:
            return
        with self.history.open("a", encoding="utf-8") as f:
            f.write(history_text([record]))
        if self._tb is not None:
            self._scalars(record)

    def _scalars(self, record: Mapping) -> None:
        """Adds every finite float of ``record`` to TensorBoard at its step."""
        step = record[self.step_key]
        for key, value in record.items():
            if key != self.step_key and isinstance(value, float) and math.isfinite(value):
                self._tb.add_scalar(key, value, step)

    def print(self, line: str) -> None:
        if self.primary:
            tqdm.write(line)

    def close(self) -> None:
        """Flushes and closes TensorBoard's file and the log's handler; the handlers are taken
        off the logging tree even where the flush fails (a full disk), whose error is raised."""
        tb, self._tb = self._tb, None
        try:
            if tb is not None:
                tb.close()
        finally:
            for handler in _console_handlers():
                handler.removeFilter(self._filter)
            if self._file_handler is not None:
                logging.getLogger().removeHandler(self._file_handler)
                self._file_handler.close()
                self._file_handler = None

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def history_text(records) -> str:
    """The JSON lines of a history (``metrics.jsonl``, ``pretrain_history.jsonl``): one record
    a line, each sealed (:func:`~lnm_jax.fileio.sealed`) so that :func:`read_history` tells a
    value edited since from the one written."""
    return "".join(json_text(sealed(r)) + "\n" for r in records)


def read_history(path: Path, up_to: int | None = None, step_key: str = "epoch") -> list[dict]:
    """The JSON-lines records of ``path`` (none if it is absent), up to step ``up_to``, without
    their seals. :class:`DamagedFileError` naming the record where one's values do not match its
    seal (a loss or an AUC edited by hand: it had reached the convergence curves and a resumed
    run's history unsaid) or its ``step_key`` is not an integer; records written before
    histories were sealed are read with a warning, once per file."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = read_json_lines(path, required=(step_key,) if up_to is not None else ())
    unsealed = 0
    for i, r in enumerate(rows, 1):
        seal = r.pop(SEAL_KEY, None)
        unsealed += seal is None
        if seal is not None and seal != json_digest(r, SEAL_KEY):
            where = f"record {i} ({step_key} {r.get(step_key)!r})"
            raise DamagedFileError.edited(
                path, f"{where}'s values do not match the {SEAL_KEY} written with them", "restore it from a copy"
            )
        step = r.get(step_key, 0)
        if not is_int(step):
            raise DamagedFileError.edited(
                path, f"record {i}'s '{step_key}' is {step!r}, not an integer", "restore it from a copy"
            )
    if unsealed:
        warn_once(
            f"{path}: {unsealed} of its {len(rows)} records hold no {SEAL_KEY} (written before histories were sealed, "
            "or it was deleted): their values are not verified",
            key=("unsealed history", path.resolve()),
        )
    return [r for r in rows if up_to is None or r[step_key] <= up_to]


def check_resumed_history(rows: list[dict], path: Path, through: int, step_key: str = "epoch") -> None:
    """That a resumed run's history (``rows``, as :func:`read_history` read them up to the
    checkpoint's step) holds each of steps 1..``through`` once, every value a number or null:
    a history deleted or cut short would be rewritten with the resumed steps alone, and a value
    edited into text would reach the convergence curves. :class:`DamagedFileError` naming the
    file, the steps it lacks or the record and field."""
    steps = [r[step_key] for r in rows]
    if steps != list(range(1, through + 1)):
        lacks = sorted(set(range(1, through + 1)) - set(steps))
        named = f"{step_key}{'s' if len(lacks) > 1 else ''} {_span(lacks)}"
        what = f"lacks {named}" if lacks else f"holds {step_key}s {steps} out of order or twice"
        remedy = "restore it from a copy, or train a new run"
        if not path.is_file():
            raise DamagedFileError(
                f"{path} is missing: the checkpoint resumed from had finished {step_key}s 1-{through}; {remedy}"
            )
        problem = f"{what} that the checkpoint resumed from had finished ({step_key}s 1-{through})"
        raise DamagedFileError.edited(path, problem, remedy)
    for i, r in enumerate(rows, 1):
        for key, value in r.items():
            if value is not None and not is_real(value):
                raise DamagedFileError.edited(
                    path, f"record {i}'s '{key}' is {value!r}, not a number", "restore it from a copy"
                )


def _span(xs: list[int]) -> str:
    return f"{xs[0]}-{xs[-1]}" if len(xs) > 1 and xs[-1] - xs[0] == len(xs) - 1 else ", ".join(map(str, xs))


def _summary_writer() -> type:
    """tensorboardX's ``SummaryWriter`` class, imported without PyTorch.

    tensorboardX imports torch whenever it is installed (to accept torch tensors, which this
    writer never passes: it adds Python floats). With the test extra's torch that import made
    every training process 2.4 s slower to start and 590 MB larger (measured alone on the 2-core
    Intel Xeon: a SummaryWriter writing one scalar, 2.54 s and 624 MB peak RSS with the import,
    0.14 s and 32 MB without).
    A ``None`` in ``sys.modules`` makes ``import torch`` raise ImportError, which tensorboardX
    catches; the entry is removed right after, so a later ``import torch`` works. Where torch is
    already imported nothing is blocked."""
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter  # noqa: PLC0415

        return SummaryWriter
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        from tensorboardX import SummaryWriter  # noqa: PLC0415  (heavy; training only)
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
    return SummaryWriter


def _console_handlers() -> list[logging.Handler]:
    """The handlers that print log records: the root logger's and absl's."""
    handlers = list(logging.getLogger().handlers)
    try:
        from absl import logging as absl_logging  # noqa: PLC0415

        handlers.append(absl_logging.get_absl_handler())
    except ImportError:
        pass
    return [h for h in handlers if not isinstance(h, logging.FileHandler)]
