"""Per-backend totals for stage metrics (the progress of long batches: ``compress_distill.progress``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
