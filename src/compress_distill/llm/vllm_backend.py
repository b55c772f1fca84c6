"""``vllm`` backend: offline ``vllm.LLM`` on one GPU node -- the single-node throughput path
(docs/architecture.md §5).

Kept thin on purpose: everything that decides *what* vLLM is asked lives in pure functions returning plain
dicts (``engine_kwargs``, ``sampling_kwargs``, ``chat_kwargs``, ``lora_spec``, ``gpu_slices``,
``completion_fields``), tested on machines without vLLM; the code that imports vLLM only turns those dicts
into vLLM objects and calls ``LLM.chat``.

- ``batch_size`` is the number of requests handed to one ``LLM.chat`` call (vLLM schedules them with
  continuous batching); completions are cached after each call, so a kill loses at most one call's work.
  The paper profile uses 512-4096.
- ``tensor_parallel_size`` goes to ``LLM``.  ``data_parallel_size > 1`` runs that many independent ``LLM``
  replicas in worker processes, each pinned to its own ``tensor_parallel_size`` GPUs through
  ``CUDA_VISIBLE_DEVICES`` (vLLM's offline data parallelism is one process per rank, as in its
  ``data_parallel_offline`` example); each call's requests are dealt round-robin over the replicas.  Dense
  models only need this; for expert-parallel MoE use the ``openai`` backend with one ``vllm serve`` per
  replica.  Before anything starts, their product is checked against the GPUs the process sees
  (``base.check_parallel_fit``).
- JSON schemas become ``SamplingParams(structured_outputs=StructuredOutputsParams(json=...))`` (vLLM >= 0.11);
  with ``reasoning_parser`` set, vLLM applies the schema only after the reasoning ends.
- Reasoning: the text is split by ``reasoning.split_completion`` with the model's ``tokens.ChatFormat``
  (computed once at load from its tokenizer, as in every backend), so a completion cut inside a think block
  the template pre-filled (Qwen3.5) has no final response; for gpt-oss (harmony: the template's generation
  prompt, ``reasoning_parser: openai_gptoss`` or the model name) special tokens are kept in the text so the
  analysis and final channels can be told apart.
- Stops: every request carries the ChatFormat's ``stop_token_ids`` (the trained end-of-turn token of a LoRA
  or full student, which vLLM would not otherwise know: it reads only the base's generation config).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from compress_distill.config import BackendConfig
from compress_distill.llm.base import BackendError, CachedBackend, Emit, check_parallel_fit, deal
from compress_distill.llm.resolve import ResolvedModel, resolve_local_model, resolved_fingerprint
from compress_distill.llm.tokens import ChatFormat, load_chat_format
from compress_distill.llm.types import ChatRequest, Completion
from compress_distill.reasoning import split_completion

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "the vllm backend needs vLLM, which is not installed here: on a CUDA machine install the gpu extra "
    "with `pip install -e '.[gpu]'`, or use backend: hf (CPU) or backend: openai (a running server)"
)
HARMONY_PARSERS = frozenset({"openai_gptoss", "gpt_oss", "gpt-oss", "harmony"})


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return vllm


# --------------------------------------------------------------------------------------------- pure parts
def is_harmony(cfg: BackendConfig) -> bool:
    """gpt-oss models speak harmony: their reasoning is a channel delimited by special tokens."""
    parser = (cfg.reasoning_parser or "").lower()
    return parser in HARMONY_PARSERS or "gpt-oss" in cfg.model.lower()


def engine_kwargs(cfg: BackendConfig, resolved: ResolvedModel) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for one replica."""
    kw: dict[str, Any] = {
        "model": resolved.weights,
        "tokenizer": resolved.tokenizer,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
    }
    if cfg.max_model_len is not None:
        kw["max_model_len"] = cfg.max_model_len
    if cfg.quantization:
        kw["quantization"] = cfg.quantization
    if cfg.dtype != "auto":
        kw["dtype"] = cfg.dtype
    if cfg.reasoning_parser:
        kw["reasoning_parser"] = cfg.reasoning_parser
    if resolved.adapter:
        rank = json.loads((Path(resolved.adapter) / "adapter_config.json").read_text(encoding="utf-8")).get(
            "r", 16
        )
        kw["enable_lora"] = True
        kw["max_lora_rank"] = int(rank)
    return kw


def sampling_kwargs(
    req: ChatRequest, *, harmony: bool, stop_token_ids: tuple[int, ...] | list[int] = ()
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for one request; ``structured_outputs`` is a plain dict
    of ``StructuredOutputsParams`` fields."""
    kw: dict[str, Any] = {
        "temperature": req.temperature,
        "top_p": req.top_p,
        "max_tokens": req.max_tokens,
        # harmony channel markers are special tokens: keep them or reasoning and answer run together
        "skip_special_tokens": not harmony,
    }
    if stop_token_ids:
        kw["stop_token_ids"] = list(stop_token_ids)
    if req.seed is not None:
        kw["seed"] = req.seed
    if req.json_schema is not None:
        kw["structured_outputs"] = {"json": req.json_schema}
    return kw


def chat_kwargs(cfg: BackendConfig, *, use_tqdm: bool) -> dict[str, Any]:
    """Keyword arguments of ``LLM.chat`` besides messages, sampling params and the LoRA request."""
    kw: dict[str, Any] = {"use_tqdm": use_tqdm, "add_generation_prompt": True}
    if cfg.chat_template_kwargs:
        kw["chat_template_kwargs"] = dict(cfg.chat_template_kwargs)
    return kw


def lora_spec(resolved: ResolvedModel) -> dict[str, Any] | None:
    """Fields of ``vllm.lora.request.LoRARequest`` for an adapter directory (None without one)."""
    if not resolved.adapter:
        return None
    return {
        "lora_name": Path(resolved.adapter).name or "adapter",
        "lora_int_id": 1,
        "lora_path": resolved.adapter,
    }


def gpu_slices(data_parallel: int, tensor_parallel: int, visible: str | None) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` of each data-parallel replica: consecutive groups of ``tensor_parallel``."""
    devices = [d.strip() for d in visible.split(",") if d.strip()] if visible else None
    need = data_parallel * tensor_parallel
    if devices is None:
        devices = [str(i) for i in range(need)]
    if len(devices) < need:
        raise ValueError(
            f"data_parallel_size {data_parallel} x tensor_parallel_size {tensor_parallel} needs {need} GPUs "
            f"but CUDA_VISIBLE_DEVICES lists {len(devices)} ({visible!r})"
        )
    return [",".join(devices[r * tensor_parallel : (r + 1) * tensor_parallel]) for r in range(data_parallel)]


def completion_fields(
    text: str,
    completion_tokens: int,
    prompt_tokens: int,
    finish_reason: str | None,
    *,
    think_prefilled: bool,
) -> dict[str, Any]:
    """Completion fields from one vLLM ``CompletionOutput`` (pure)."""
    finish = finish_reason or "stop"
    reasoning, final = split_completion(text, finish, think_prefilled)
    return {
        "text": final,
        "reasoning": reasoning,
        "finish_reason": finish,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
    }


# --------------------------------------------------------------------------------------------- vLLM calls
def _chat(
    vllm: Any,
    llm: Any,
    conversations: list[list[dict[str, str]]],
    sampling: list[dict[str, Any]],
    chat_kw: dict[str, Any],
    lora: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """One ``LLM.chat`` call; ``completion_fields`` arguments as plain dicts (they cross process boundaries
    for data parallelism; the parent splits them, with the chat format it loaded)."""
    from vllm.sampling_params import StructuredOutputsParams

    params = []
    for kw in sampling:
        kw = dict(kw)
        if "structured_outputs" in kw:
            kw["structured_outputs"] = StructuredOutputsParams(**kw["structured_outputs"])
        params.append(vllm.SamplingParams(**kw))
    lora_request = None
    if lora is not None:
        from vllm.lora.request import LoRARequest

        lora_request = LoRARequest(**lora)
    outputs = llm.chat(conversations, params, lora_request=lora_request, **chat_kw)
    results = []
    for out in outputs:
        first = out.outputs[0]
        results.append(
            {
                "text": first.text,
                "completion_tokens": len(first.token_ids),
                "prompt_tokens": len(out.prompt_token_ids or []),
                "finish_reason": first.finish_reason,
            }
        )
    return results


def _replica_main(rank: int, devices: str, engine_kw: dict[str, Any], inbox: Any, outbox: Any) -> None:
    """Data-parallel worker process: one ``LLM`` on its own GPUs, serving chat jobs until told to stop."""
    os.environ["CUDA_VISIBLE_DEVICES"] = devices
    try:
        vllm = import_vllm()
        llm = vllm.LLM(**engine_kw)
        outbox.put((rank, "ready", None))
        while (job := inbox.get()) is not None:
            conversations, sampling, chat_kw, lora = job
            outbox.put((rank, "done", _chat(vllm, llm, conversations, sampling, chat_kw, lora)))
    except BaseException as err:  # noqa: BLE001 - sent to the parent, which raises it with the rank
        import traceback

        outbox.put((rank, "error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))


class VLLMBackend(CachedBackend):
    """Offline vLLM; see the module docstring."""

    name = "vllm"

    def __init__(self, cfg: BackendConfig, *, cache_dir: Path | None, use_cache: bool = True) -> None:
        super().__init__(cfg, cache_dir=cache_dir, use_cache=use_cache)
        self.resolved = resolve_local_model(cfg.model)
        self.harmony = is_harmony(cfg)
        self.format: ChatFormat | None = None  # known once loaded
        self._vllm: Any = None
        self._llm: Any = None
        self._replicas: list[tuple[Any, Any]] = []  # (process, inbox)
        self._outbox: Any = None

    def engine_id(self) -> dict[str, Any]:
        return {
            "backend": "vllm",
            "model": self.model,
            **resolved_fingerprint(self.resolved),
            "dtype": self.cfg.dtype,
            "quantization": self.cfg.quantization,
            "reasoning_parser": self.cfg.reasoning_parser,
            "chat_template_kwargs": self.cfg.chat_template_kwargs,
        }

    def _load(self) -> None:
        self._vllm = import_vllm()
        self.format = load_chat_format(self.resolved, self.cfg.chat_template_kwargs)
        # a student directory's name says nothing about its family: its template does
        self.harmony = self.harmony or self.format.harmony
        import torch

        # before any engine starts: too few GPUs is one line here, not a vLLM traceback minutes later
        if idle := check_parallel_fit(self.cfg, torch.cuda.device_count()):
            log.warning("vllm: %s", idle)
        kw = engine_kwargs(self.cfg, self.resolved)
        dp = self.cfg.data_parallel_size
        if dp == 1:
            self._llm = self._vllm.LLM(**kw)
            return
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # CUDA cannot be forked
        self._outbox = ctx.Queue()
        slices = gpu_slices(dp, self.cfg.tensor_parallel_size, os.environ.get("CUDA_VISIBLE_DEVICES"))
        for rank, devices in enumerate(slices):
            inbox = ctx.Queue()
            proc = ctx.Process(
                target=_replica_main,
                args=(rank, devices, kw, inbox, self._outbox),
                name=f"vllm-dp{rank}",
                daemon=True,
            )
            proc.start()
            self._replicas.append((proc, inbox))
        self._collect("ready", dp)

    def _collect(self, kind: str, count: int) -> dict[int, Any]:
        import queue

        got: dict[int, Any] = {}
        while len(got) < count:
            try:
                rank, status, payload = self._outbox.get(timeout=10.0)
            except queue.Empty:
                dead = [r for r, (p, _) in enumerate(self._replicas) if not p.is_alive() and r not in got]
                if dead:
                    raise BackendError(
                        f"vLLM data-parallel replica(s) {dead} died (see their log above)"
                    ) from None
                continue
            if status == "error":
                raise BackendError(f"vLLM data-parallel replica {rank} failed: {payload}")
            if status != kind:
                raise BackendError(f"replica {rank} sent {status!r} while {kind!r} was expected")
            got[rank] = payload
        return got

    def _run(self, requests: list[ChatRequest], emit: Emit) -> None:
        use_tqdm = sys.stderr.isatty()
        chat_kw = chat_kwargs(self.cfg, use_tqdm=use_tqdm)
        lora = lora_spec(self.resolved)
        fmt = self.format
        if fmt is None:
            raise BackendError("vllm: _run before _load (a bug in the backend base)")
        step = self.cfg.batch_size
        for start in range(0, len(requests), step):
            chunk = requests[start : start + step]
            conversations = [r.messages for r in chunk]
            sampling = [
                sampling_kwargs(r, harmony=self.harmony, stop_token_ids=fmt.stop_token_ids) for r in chunk
            ]
            results: list[dict[str, Any]] | list[dict[str, Any] | None]
            if self._llm is not None:
                results = _chat(self._vllm, self._llm, conversations, sampling, chat_kw, lora)
            else:
                slots: list[dict[str, Any] | None] = [None] * len(chunk)
                shards = deal(len(chunk), len(self._replicas))
                busy = [rank for rank, shard in enumerate(shards) if shard]  # a short last chunk idles some
                for rank in busy:
                    shard = shards[rank]
                    self._replicas[rank][1].put(
                        ([conversations[i] for i in shard], [sampling[i] for i in shard], chat_kw, lora)
                    )
                for rank, outs in self._collect("done", len(busy)).items():
                    for i, fields in zip(shards[rank], outs, strict=True):
                        slots[i] = fields
                results = slots
            for offset, raw in enumerate(results):
                if raw is None:  # every index of the chunk is dealt to exactly one replica
                    raise BackendError(f"no vLLM output came back for request {start + offset}")
                fields = completion_fields(**raw, think_prefilled=fmt.think_prefilled)
                emit(start + offset, Completion(model=self.model, **fields))

    def _unload(self) -> None:
        for _, inbox in self._replicas:
            inbox.put(None)
        for proc, _ in self._replicas:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
        self._replicas.clear()
        if self._llm is not None:
            import gc

            self._llm = None
            gc.collect()  # drops the engine core; vLLM shuts its worker processes down with it
