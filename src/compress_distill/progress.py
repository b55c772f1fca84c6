"""Progress of long loops -- an engine's requests, a trainer's steps -- through one set-up shared by every stage.

On a terminal it is a tqdm bar; elsewhere (a cluster job, ``dvc repro`` under ``nohup``) a bar writes nothing
readable, so one timestamped log line (done/total, tokens/s, ETA and any extra such as the loss) goes to stderr
at a fixed interval instead: ``COMPRESS_DISTILL_PROGRESS_S`` seconds, 60 by default, plus one at the end.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Self

PROGRESS_INTERVAL_ENV = "COMPRESS_DISTILL_PROGRESS_S"
PROGRESS_INTERVAL_S = 60.0  # one line a minute: readable in a day-long job log


def progress_line(
    desc: str,
    done: int,
    total: int,
    tokens: int,
    elapsed_s: float,
    *,
    unit: str = "requests",
    initial: int = 0,
    extra: str = "",
) -> str:
    """``desc: done/total unit (pct), tokens/s[, extra], ETA h:mm:ss``.

    Rates are over what this process did: ``done - initial`` items (a resumed run starts at ``initial``) and
    ``tokens`` in ``elapsed_s`` seconds; the ETA is the remaining items at that mean rate."""
    elapsed_s = max(elapsed_s, 1e-9)
    rate = (done - initial) / elapsed_s
    eta = (total - done) / rate if rate > 0 else math.inf
    eta_txt = "?" if math.isinf(eta) else time.strftime("%H:%M:%S", time.gmtime(eta))
    pct = 100.0 * done / total if total else 100.0
    middle = f", {extra}" if extra else ""
    return (
        f"{desc}: {done}/{total} {unit} ({pct:.0f}%), {tokens / elapsed_s:.1f} tok/s{middle}, ETA {eta_txt}"
    )


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (a job log, pytest's capture)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def progress_log() -> logging.Logger:
    """The one progress logger of every stage: timestamped INFO lines on stderr, whatever the root logger's
    set-up (the stages leave logging unconfigured so that an error stays one line)."""
    logger = logging.getLogger("compress_distill.progress")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


class Progress:
    """tqdm bar on stderr with items done, tokens/s and ETA on a terminal; a log line every ``interval_s``
    (``COMPRESS_DISTILL_PROGRESS_S``, default 60) and at the last item when stderr is not a terminal.

    ``initial``: items already done before this process (a resumed training run), not counted in the rates.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "requests",
        initial: int = 0,
        enabled: bool | None = None,
        interval_s: float | None = None,
    ) -> None:
        from tqdm import tqdm

        if enabled is None:
            enabled = sys.stderr.isatty()
        self._lines = not enabled
        self._interval_s = (
            interval_s
            if interval_s is not None
            else float(os.environ.get(PROGRESS_INTERVAL_ENV, PROGRESS_INTERVAL_S))
        )
        self._desc, self._unit, self._total = desc, unit, total
        self._initial = self._done = initial
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit.removesuffix("s"),
            file=sys.stderr,
            disable=not enabled,
            dynamic_ncols=True,
            smoothing=0.05,
        )
        self._start = time.perf_counter()
        self._tokens = 0
        self._last_postfix = 0.0
        self._last_line = self._start

    def update(self, n: int, tokens: int, extra: str = "") -> None:
        """``n`` more items done, with ``tokens`` tokens; ``extra`` (e.g. ``loss 1.2345``) joins the line."""
        self._tokens += tokens
        self._done += n
        self._bar.update(n)
        now = time.perf_counter()
        if self._lines and (now - self._last_line >= self._interval_s or self._done >= self._total):
            self._last_line = now
            progress_log().info(
                progress_line(
                    self._desc,
                    self._done,
                    self._total,
                    self._tokens,
                    now - self._start,
                    unit=self._unit,
                    initial=self._initial,
                    extra=extra,
                )
            )
        if now - self._last_postfix > 0.5:  # refreshing the postfix costs a redraw; twice a second is plenty
            self._last_postfix = now
            rate = f"{self._tokens / max(now - self._start, 1e-9):.1f} tok/s"
            self._bar.set_postfix_str(f"{rate}, {extra}" if extra else rate, refresh=False)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
