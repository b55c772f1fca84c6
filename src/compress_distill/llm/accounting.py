"""Per-backend totals for stage metrics, and the progress of long batches.

Progress is a tqdm bar on a terminal; elsewhere (a cluster job, ``dvc repro`` under ``nohup``) a bar writes
nothing readable, so one log line (done/total, tokens/s, ETA) is written at a fixed interval instead:
``COMPRESS_DISTILL_PROGRESS_S`` seconds, 60 by default.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Self


@dataclass
class BackendStats:
    """Running totals of one backend instance (``backend.stats``), summed over its ``generate`` calls.

    requests           completions returned (cache hits and duplicates included)
    cached             served from the durable request cache without touching the engine
    deduplicated       identical deterministic requests within one call, generated once and shared
    generated          requests the engine actually ran
    prompt_tokens      prompt tokens of the generated requests (cache hits cost nothing and are not counted)
    completion_tokens  completion tokens of the generated requests
    wall_clock_s       seconds spent inside ``generate`` (engine + cache + bookkeeping)
    load_s             seconds spent loading the model or starting servers (once per instance)
    gpus               GPUs the engine holds (the backend config's ``held_gpus``: ``gpus``, times the replicas
                       of SLURM-launched servers; 0 on CPU)
    gpu_hours          gpus x (wall_clock_s + load_s) / 3600: the GPUs are held from load to close
    """

    requests: int = 0
    cached: int = 0
    deduplicated: int = 0
    generated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_clock_s: float = 0.0
    load_s: float = 0.0
    gpus: int = 0

    @property
    def gpu_hours(self) -> float:
        return self.gpus * (self.wall_clock_s + self.load_s) / 3600.0

    @property
    def completion_tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_clock_s if self.wall_clock_s > 0 else 0.0

    def as_metrics(self, prefix: str = "llm_") -> dict[str, Any]:
        """Flat numbers for a stage's metrics JSON (DVC drops nested lists)."""
        out: dict[str, Any] = {
            "requests": self.requests,
            "cached": self.cached,
            "deduplicated": self.deduplicated,
            "generated": self.generated,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "wall_clock_s": round(self.wall_clock_s, 3),
            "load_s": round(self.load_s, 3),
            "gpu_hours": round(self.gpu_hours, 6),
            "completion_tokens_per_s": round(self.completion_tokens_per_s, 2),
        }
        return {f"{prefix}{k}": v for k, v in out.items()}


PROGRESS_INTERVAL_ENV = "COMPRESS_DISTILL_PROGRESS_S"
PROGRESS_INTERVAL_S = 60.0  # one line a minute: readable in a day-long job log


def progress_line(desc: str, done: int, total: int, tokens: int, elapsed_s: float) -> str:
    """``desc: done/total requests (pct), tokens/s, ETA h:mm:ss`` (ETA at the mean rate so far)."""
    elapsed_s = max(elapsed_s, 1e-9)
    rate = done / elapsed_s
    eta = (total - done) / rate if rate > 0 else math.inf
    eta_txt = "?" if math.isinf(eta) else time.strftime("%H:%M:%S", time.gmtime(eta))
    pct = 100.0 * done / total if total else 100.0
    return f"{desc}: {done}/{total} requests ({pct:.0f}%), {tokens / elapsed_s:.1f} tok/s, ETA {eta_txt}"


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
    """tqdm bar on stderr with requests done, tokens/s and ETA on a terminal; a log line every
    ``interval_s`` (``COMPRESS_DISTILL_PROGRESS_S``, default 60) when stderr is not a terminal."""

    def __init__(
        self, total: int, desc: str, *, enabled: bool | None = None, interval_s: float | None = None
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
        self._desc, self._total, self._done = desc, total, 0
        self._bar = tqdm(
            total=total,
            desc=desc,
            unit="req",
            file=sys.stderr,
            disable=not enabled,
            dynamic_ncols=True,
            smoothing=0.05,
        )
        self._start = time.perf_counter()
        self._tokens = 0
        self._last_postfix = 0.0
        self._last_line = self._start

    def update(self, n: int, completion_tokens: int) -> None:
        self._tokens += completion_tokens
        self._done += n
        self._bar.update(n)
        now = time.perf_counter()
        if self._lines and (now - self._last_line >= self._interval_s or self._done >= self._total):
            self._last_line = now
            progress_log().info(
                progress_line(self._desc, self._done, self._total, self._tokens, now - self._start)
            )
        if now - self._last_postfix > 0.5:  # refreshing the postfix costs a redraw; twice a second is plenty
            self._last_postfix = now
            self._bar.set_postfix_str(
                f"{self._tokens / max(now - self._start, 1e-9):.1f} tok/s", refresh=False
            )

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
