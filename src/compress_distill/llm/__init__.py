"""Engine layer: every model call of the factory goes through ``make_backend(cfg).generate(requests)``."""

from compress_distill.llm.types import Backend, ChatRequest, Completion

__all__ = ["Backend", "ChatRequest", "Completion", "make_backend"]


def make_backend(cfg, **kwargs):
    """Build the backend named by ``cfg["backend"]`` (hf | vllm | openai); see ``llm.factory``."""
    from compress_distill.llm.factory import make_backend as _make

    return _make(cfg, **kwargs)
