"""``hf`` backend: transformers ``generate`` on CPU, one GPU or one replica per GPU -- the embedded default
(docs/architecture.md §5).

How a call runs:
- requests are grouped by (JSON schema, effective max_tokens); each group is sorted by prompt length
  (longest first, so an out-of-memory shows up in the first batch and the ETA is pessimistic) and cut into
  batches of ``batch_size``, left-padded (``plan_batches``);
- with ``data_parallel_size`` N > 1 (CUDA only) the model is loaded once per device ``cuda:0 .. cuda:N-1`` of
  the process (``replica_devices``) and the batches are dealt round-robin over the replicas (``deal``), each
  replica generating its share in its own thread (CUDA kernels run outside the GIL); token ids come back to
  the calling thread, which decodes and emits them;
- generation stops on the model's ``tokens.ChatFormat`` stop tokens (the trained end-of-turn token, EOS,
  ``<|im_end|>`` for SmolLM2); ``finish_reason`` is "stop" when one was produced, "length" when
  ``max_tokens`` ran out; the text is split by ``reasoning.split_completion`` like every backend's;
- a JSON schema is enforced with xgrammar's HF logits processor (the whole completion is the JSON);
- completions are emitted per finished batch (the base class caches them at once).

Sampling (temperature > 0) does not use transformers' sampler, which draws the whole batch from the global
torch RNG (so a row's tokens would depend on its batch mates).  ``_RowSampler`` draws each row from its own
``torch.Generator`` seeded by the request's ``seed`` and then lets greedy search pick the drawn token, so a
seeded request yields the same tokens whatever batch it lands in and whatever ran before.  What holds:
identical output for the same (request, weights, dtype, device); batch composition changes the logits only by
float rounding of differently shaped matmuls, which flips a draw (or a greedy argmax) only on a near-tie.
Requests without a seed get a fresh random one.

Measured CPU speed of SmolLM2-135M fp32 (docs/architecture.md §5): 28 / 107 / 236 tok/s at batch 1 / 8 / 32.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compress_distill.config import BackendConfig
from compress_distill.llm.base import BackendError, CachedBackend, Emit, check_parallel_fit, deal
from compress_distill.llm.resolve import resolve_local_model, resolved_fingerprint
from compress_distill.llm.tokens import ChatFormat, chat_format, is_harmony, trained_eot_id
from compress_distill.llm.types import ChatRequest, Completion
from compress_distill.reasoning import split_completion

log = logging.getLogger(__name__)


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("backend device is 'cuda' but no CUDA GPU is visible; set device: cpu (or auto)")
    return device


def replica_devices(device: str, data_parallel: int, cuda_devices: int) -> list[str]:
    """Torch devices of the model replicas: ``device`` itself for one, else ``cuda:0 .. cuda:N-1`` -- one
    whole model per CUDA device this process sees (``cuda_devices``, after ``CUDA_VISIBLE_DEVICES``)."""
    if data_parallel == 1:
        return [device]
    if device != "cuda" or data_parallel > cuda_devices:
        raise BackendError(
            f"hf: data_parallel_size {data_parallel} puts one replica on each of {data_parallel} CUDA devices "
            f"but this process sees {cuda_devices if device == 'cuda' else 0}; give the job that many GPUs "
            "(the engine's gpus) or lower data_parallel_size"
        )
    return [f"cuda:{i}" for i in range(data_parallel)]


def plan_batches(
    requests: list[ChatRequest], prompt_lens: list[int], max_positions: int | None, batch_size: int
) -> tuple[list[tuple[list[int], int, str]], list[int]]:
    """The batches of one call and the requests whose prompt leaves no room to generate.

    A batch is (request indices, max new tokens, JSON schema or ""): requests grouped by (schema, effective
    ``max_tokens`` -- capped by the model's context), each group sorted longest prompt first and cut into
    ``batch_size`` pieces."""
    groups: dict[tuple[str, int], list[int]] = {}
    too_long: list[int] = []
    for i, (req, n_prompt) in enumerate(zip(requests, prompt_lens, strict=True)):
        budget = req.max_tokens if max_positions is None else min(req.max_tokens, max_positions - n_prompt)
        if budget <= 0:
            too_long.append(i)
            continue
        schema = json.dumps(req.json_schema, sort_keys=True) if req.json_schema is not None else ""
        groups.setdefault((schema, budget), []).append(i)
    batches = []
    for (schema, budget), members in groups.items():
        members.sort(key=lambda i: -prompt_lens[i])
        for start in range(0, len(members), batch_size):
            batches.append((members[start : start + batch_size], budget, schema))
    return batches, too_long


def run_on_replicas(
    devices: list[str],
    n_batches: int,
    generate: Callable[[int, int], list[list[int]]],
    finish: Callable[[int, list[list[int]]], None],
) -> None:
    """Batches ``0 .. n_batches-1`` dealt round-robin over the replicas on ``devices``, one thread each:
    ``generate(replica, batch)`` runs in the replica's thread, ``finish(batch, token_ids)`` in the calling one
    (tokenizers and the request cache are not shared across threads), in the order batches complete.  The
    first failure stops every replica after its current batch and is raised as a ``BackendError``."""
    results: queue.Queue[tuple[int, list[list[int]] | None, BaseException | None]] = queue.Queue()
    stop = threading.Event()
    shards = deal(n_batches, len(devices))

    def work(replica: int) -> None:
        for b in shards[replica]:
            if stop.is_set():
                return
            try:
                results.put((b, generate(replica, b), None))
            except BaseException as err:  # noqa: BLE001 - handed to the calling thread, which raises it
                results.put((b, None, err))
                return

    threads = [
        threading.Thread(target=work, args=(r,), name=f"hf-dp{r}", daemon=True)
        for r in range(len(devices))
        if shards[r]
    ]
    for thread in threads:
        thread.start()
    try:
        for _ in range(n_batches):
            b, new_tokens, err = results.get()
            if err is not None or new_tokens is None:
                device = devices[b % len(devices)]  # deal's round-robin
                raise BackendError(
                    f"hf: the replica on {device} failed: {type(err).__name__}: {err}"
                ) from err
            finish(b, new_tokens)
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def _resolve_dtype(dtype: str, device: str) -> str:
    if dtype != "auto":
        return dtype
    # bf16 halves memory and doubles speed on GPUs; CPU bf16 matmuls are slow and less exact, so fp32 there.
    return "bfloat16" if device == "cuda" else "float32"


class _RowSampler:
    """Logits processor: per-row temperature / top-p sampling from per-row generators (module docstring).

    Each sampled row draws exactly one uniform number per step from its own generator and picks the token by
    inverse CDF, so its stream depends on nothing but its seed.  The nucleus is searched among the
    ``_NUCLEUS_K`` most likely tokens (one batched ``topk``: 0.9 ms for 7 rows of SmolLM2's 49k vocabulary
    on one CPU thread) and falls back to an exact full sort only when those hold less than ``top_p`` of the
    mass; a sort plus ``multinomial`` for every row and step cost 6 ms per row, as much as the model step.
    """

    _NUCLEUS_K = 64  # peaked LM distributions at temperature <= 1 rarely need more for top_p 0.9-0.95

    def __init__(self, temperatures: list[float], top_ps: list[float], seeds: list[int], device: str) -> None:
        import torch

        self.rows = [i for i, t in enumerate(temperatures) if t > 0]  # greedy rows keep their argmax
        self.temperatures = torch.tensor([temperatures[i] for i in self.rows], dtype=torch.float32).unsqueeze(
            1
        )
        self.top_ps = [top_ps[i] for i in self.rows]
        self.generators = []
        for i in self.rows:
            gen = torch.Generator(device=device)
            gen.manual_seed(seeds[i])
            self.generators.append(gen)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if not self.rows:
            return scores
        rows = torch.tensor(self.rows, device=scores.device)
        probs = torch.softmax(scores[rows].float() / self.temperatures.to(scores.device), dim=-1)
        if any(top_p < 1.0 for top_p in self.top_ps):
            top_vals, top_idx = probs.topk(min(self._NUCLEUS_K, probs.shape[-1]), dim=-1)  # most likely first
        choices = []
        for j, (top_p, gen) in enumerate(zip(self.top_ps, self.generators, strict=True)):
            u = torch.rand((), generator=gen, device=gen.device).to(probs.device)  # one draw per row and step
            if top_p >= 1.0:
                vals, idx = probs[j], None  # the whole distribution, in vocabulary order
            else:
                vals, idx = top_vals[j], top_idx[j]
                if float(vals.sum()) < top_p:
                    vals, idx = torch.sort(probs[j], descending=True)  # a flat distribution: exact nucleus
                # the smallest prefix whose mass reaches top_p (always at least the top token)
                vals = vals * ((torch.cumsum(vals, dim=-1) - vals) < top_p)
            cdf = torch.cumsum(vals, dim=-1)
            pick = torch.searchsorted(cdf, (u * cdf[-1]).reshape(1), right=True).clamp_(max=cdf.shape[-1] - 1)
            choices.append(pick if idx is None else idx[pick])
        chosen = torch.cat(choices)
        scores[rows] = float("-inf")
        scores[rows, chosen] = 0.0
        return scores


def decode_completion(
    tokenizer: Any, ids: list[int], max_new: int, fmt: ChatFormat, *, keep_specials: bool
) -> dict[str, Any]:
    """``Completion`` fields (but prompt tokens and model) of the generated token ids of one row.

    The row ends at its first stop token (``fmt.stop_token_ids``; it counts, as in vLLM) or is cut at
    ``max_new``; the decoded text goes through ``reasoning.split_completion`` like every backend's.  Harmony
    keeps its channel markers (``keep_specials``: the split needs them); elsewhere specials are noise.
    """
    stops = set(fmt.stop_token_ids)
    end = next((k for k, t in enumerate(ids) if t in stops), None)
    if end is None:
        body, n_tokens, finish = ids, len(ids), "length" if len(ids) >= max_new else "stop"
    else:
        body, n_tokens, finish = ids[:end], end + 1, "stop"
    raw = tokenizer.decode(body, skip_special_tokens=not keep_specials)
    reasoning, text = split_completion(raw, finish, fmt.think_prefilled)
    return {"text": text, "reasoning": reasoning, "finish_reason": finish, "completion_tokens": n_tokens}


class HFBackend(CachedBackend):
    """transformers on CPU/GPU; see the module docstring."""

    name = "hf"

    def __init__(self, cfg: BackendConfig, *, cache_dir: Path | None, use_cache: bool = True) -> None:
        super().__init__(cfg, cache_dir=cache_dir, use_cache=use_cache)
        self.resolved = resolve_local_model(cfg.model)
        self.device = _resolve_device(cfg.device)
        self.dtype = _resolve_dtype(cfg.dtype, self.device)
        self.tokenizer: Any = None
        self.hf_model: Any = None  # the first replica's model
        self._replicas: list[tuple[str, Any]] = []  # (torch device, model), one per data-parallel replica
        self._grammar_lock = threading.Lock()
        self._stop_ids: list[int] = []
        self._pad_id = 0
        self._max_positions: int | None = None
        self._grammar_compiler: Any = None
        self._harmony = False
        self._format = ChatFormat("plain")  # the model's own, once loaded

    def engine_id(self) -> dict[str, Any]:
        return {
            "backend": "hf",
            "model": self.model,
            **resolved_fingerprint(self.resolved),
            "dtype": self.dtype,
            "device": self.device,
            "chat_template_kwargs": self.cfg.chat_template_kwargs,
        }

    # ---------------------------------------------------------------------------------------- loading
    def _load(self) -> None:
        import torch
        from transformers import AutoTokenizer, GenerationConfig

        tok = AutoTokenizer.from_pretrained(self.resolved.tokenizer, padding_side="left")
        cuda_devices = torch.cuda.device_count() if self.device == "cuda" else 0
        devices = replica_devices(self.device, self.cfg.data_parallel_size, cuda_devices)
        if self.device == "cuda" and (idle := check_parallel_fit(self.cfg, cuda_devices)):
            log.warning("hf: %s", idle)
        self._replicas = [(device, self._load_model(tok, device)) for device in devices]
        model = self._replicas[0][1]
        model_eos = model.generation_config.eos_token_id if model.generation_config is not None else None
        self._format = chat_format(
            tok,
            generation_eos=model_eos,
            trained_eot=trained_eot_id(self.resolved.adapter or self.resolved.weights),
            template_kwargs=self.cfg.chat_template_kwargs,
        )
        self._stop_ids = list(self._format.stop_token_ids)
        # A neutral generation config: the checkpoint's own (Qwen ships temperature/top_k/repetition_penalty)
        # must not leak into decoding, which is fully specified by the request.
        for _, replica in self._replicas:
            replica.generation_config = GenerationConfig(
                bos_token_id=tok.bos_token_id, eos_token_id=self._stop_ids
            )
        pad = tok.pad_token_id if tok.pad_token_id is not None else self._stop_ids[0]
        self._pad_id = int(pad)
        self._max_positions = getattr(model.config.get_text_config(), "max_position_embeddings", None)
        self._harmony = is_harmony(tok)
        self.tokenizer, self.hf_model = tok, model
        log.info("hf: loaded %s (%s, %s) stop ids %s", self.model, devices, self.dtype, self._stop_ids)

    def _load_model(self, tok: Any, device: str) -> Any:
        """The model (an adapter merged into its base) in eval mode on ``device``."""
        import torch
        from transformers import AutoModelForCausalLM

        # Any: transformers' return types are unions (a PeftModel wraps it below) that mypy cannot follow
        model: Any = AutoModelForCausalLM.from_pretrained(
            self.resolved.weights, dtype=getattr(torch, self.dtype)
        )
        if self.resolved.adapter:
            from peft import PeftModel

            rows = model.get_input_embeddings().weight.shape[0]
            # the training stage may have added tokens (e.g. a pad token): match the adapter's base
            if len(tok) > rows:
                model.resize_token_embeddings(len(tok))
            # merge_and_unload folds B@A into the base weights: generation then runs at base-model speed
            model = PeftModel.from_pretrained(model, self.resolved.adapter).merge_and_unload()
        return model.to(device).eval()

    def _unload(self) -> None:
        devices = [device for device, _ in self._replicas]
        self.hf_model = None
        self._replicas = []
        self._grammar_compiler = None
        if self.device == "cuda":
            import torch

            for device in devices:  # each replica's device keeps its own cache
                with torch.cuda.device(device if device != "cuda" else None):
                    torch.cuda.empty_cache()

    # ---------------------------------------------------------------------------------------- generation
    def prompt_ids(self, req: ChatRequest) -> list[int]:
        from compress_distill.llm.tokens import chat_prompt_ids

        return chat_prompt_ids(self.tokenizer, req.messages, **self.cfg.chat_template_kwargs)

    def _run(self, requests: list[ChatRequest], emit: Emit) -> None:
        prompts = [self.prompt_ids(r) for r in requests]
        batches, too_long = plan_batches(
            requests, [len(p) for p in prompts], self._max_positions, self.cfg.batch_size
        )
        for i in too_long:
            # Deterministic outcome, not an error: the stage counts it as truncated like any cut-off trace.
            log.warning(
                "hf: prompt of %d tokens leaves no room in the %d-token context; returning an "
                "empty 'length' completion",
                len(prompts[i]),
                self._max_positions,
            )
            emit(
                i,
                Completion(
                    text="",
                    reasoning="",
                    finish_reason="length",
                    prompt_tokens=len(prompts[i]),
                    completion_tokens=0,
                    model=self.model,
                    extra={"error": "prompt_too_long"},
                ),
            )

        def generate(replica: int, b: int) -> list[list[int]]:
            members, budget, _ = batches[b]
            # compile the first request's schema as written: xgrammar keeps the property order it is given
            first_schema = requests[members[0]].json_schema
            return self._generate_ids(
                replica,
                [requests[i] for i in members],
                [prompts[i] for i in members],
                budget,
                json.dumps(first_schema) if first_schema is not None else "",
            )

        def finish(b: int, new_tokens: list[list[int]]) -> None:
            members, budget, _ = batches[b]
            for i, ids in zip(members, new_tokens, strict=True):
                emit(i, self._completion(ids, len(prompts[i]), budget))

        if len(self._replicas) == 1:
            for b in range(len(batches)):
                finish(b, generate(0, b))
            return
        run_on_replicas([device for device, _ in self._replicas], len(batches), generate, finish)

    def _generate_ids(
        self, replica: int, requests: list[ChatRequest], prompts: list[list[int]], max_new: int, schema: str
    ) -> list[list[int]]:
        """The generated token ids of one batch on replica ``replica`` (prompt excluded, padding included)."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        device, model = self._replicas[replica]
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        processors = LogitsProcessorList()
        if schema:
            processors.append(self._grammar_processor(schema))
        if any(r.temperature > 0 for r in requests):
            seeds = [r.seed if r.seed is not None else secrets.randbits(63) for r in requests]
            processors.append(
                _RowSampler([r.temperature for r in requests], [r.top_p for r in requests], seeds, device)
            )
        gen_cfg = GenerationConfig(
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=self._stop_ids,
            pad_token_id=self._pad_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )
        with torch.inference_mode():
            out = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                generation_config=gen_cfg,
                logits_processor=processors,
            )
        new_tokens: list[list[int]] = out[:, width:].tolist()
        return new_tokens

    def _completion(self, ids: list[int], prompt_len: int, max_new: int) -> Completion:
        fields = decode_completion(self.tokenizer, ids, max_new, self._format, keep_specials=self._harmony)
        return Completion(prompt_tokens=prompt_len, model=self.model, **fields)

    def _grammar_processor(self, schema: str) -> Any:
        import xgrammar as xgr
        from xgrammar.contrib.hf import LogitsProcessor

        with self._grammar_lock:  # replicas' threads share one compiler
            if self._grammar_compiler is None:
                # may exceed len(tokenizer): padding
                vocab = self.hf_model.get_output_embeddings().weight.shape[0]
                info = xgr.TokenizerInfo.from_huggingface(
                    self.tokenizer, vocab_size=vocab, stop_token_ids=self._stop_ids
                )
                self._grammar_compiler = xgr.GrammarCompiler(info)  # caches compiled schemas itself
        # Compact JSON (no free whitespace): small models otherwise drift into runs of newlines and spaces.
        compiled = self._grammar_compiler.compile_json_schema(schema, any_whitespace=False)
        return LogitsProcessor(compiled)  # single use: a new one per generate() call
