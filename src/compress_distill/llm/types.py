"""The engine contract (docs/architecture.md §6): requests in, completions out, in request order."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]  # [{"role": "user", "content": "..."}]
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    json_schema: dict[str, Any] | None = None  # constrain the final response to this JSON schema

    def __post_init__(self) -> None:
        if not self.messages:
            raise ValueError("ChatRequest needs at least one message")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def key(self, model: str) -> str:
        """Content address: everything that changes the output (model, messages, sampling, seed, schema)."""
        # Same payload as {"model": model, **asdict(self)} (a frozen dataclass's __dict__ holds exactly its
        # fields), without asdict's deep copy: 3x faster, and cached re-runs hash every request.
        payload = {"model": model, **vars(self)}
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Completion:
    text: str  # the final response (after the reasoning)
    reasoning: str  # think block / reasoning channel; "" when the model emitted none
    finish_reason: str  # "stop" | "length" | ...
    prompt_tokens: int
    completion_tokens: int
    model: str
    request_hash: str = ""
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


class Backend(Protocol):
    model: str

    def generate(self, requests: list[ChatRequest]) -> list[Completion]: ...

    def close(self) -> None: ...
