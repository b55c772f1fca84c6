"""Exact sample packing: best-fit-decreasing bins, per-row positions, no attention across rows.

A packed micro-batch is ONE row of concatenated samples (padding-free): ``position_ids`` restart at 0 for
every sample and no 2-D attention mask is passed, so

- with flash-attn, transformers takes the variable-length path; the sequence boundaries are also handed over
  explicitly (``cu_seq_lens_q/k``, ``max_length_q/k``) so no layer has to recompute them;
- with SDPA/eager, transformers builds a block-diagonal causal mask from ``position_ids`` -- but only when no
  KV cache exists, so every forward must pass ``use_cache=False`` (with the default cache, packed rows
  silently attend to each other: docs/architecture.md §7, known traps);
- linear-attention layers (Qwen3.5's Gated DeltaNet) only see boundaries through ``cu_seq_lens_q`` /
  ``seq_idx``, and their pure-torch fallback kernels ignore them.  ``check_packing`` runs a packed forward
  against per-row forwards on the real model before training and refuses packing when they differ.

Targets are shifted per row here (position ``t`` predicts token ``t+1`` of the same row), so a row's last
token never learns to predict the next row's first token, and the loss is a sum over target positions that the
trainer divides by the step's total target count (token-weighted mean, exact under gradient accumulation).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

IGNORE = -100


class PackingError(RuntimeError):
    """Packed rows would attend to (or leak state into) each other with this model and kernel set."""


def pack_bfd(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: indices of ``lengths`` grouped into bins of at most ``capacity`` tokens.

    Items are placed longest first into the open bin with the least room that still fits them.  Open bins are
    kept in a list sorted by (room, bin id), so each placement is a binary search: O(n log n) plus list
    shifts, a few seconds for the paper's ~283k rows.  Deterministic: ties go to the lower index / bin id.
    """
    too_long = [i for i, n in enumerate(lengths) if n > capacity]
    if too_long:
        raise ValueError(
            f"{len(too_long)} item(s) longer than the bin capacity {capacity} (first: {too_long[0]})"
        )
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    open_bins: list[tuple[int, int]] = []  # (room left, bin id), sorted
    for i in order:
        need = int(lengths[i])
        pos = bisect.bisect_left(open_bins, (need, -1))
        if pos < len(open_bins):
            room, b = open_bins.pop(pos)
        else:
            room, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        if room - need > 0:
            bisect.insort(open_bins, (room - need, b))
    return bins


def row_targets(ids: np.ndarray, n_prompt: int) -> np.ndarray:
    """Shifted targets of one row: ``t`` -> ``ids[t+1]`` where ``t+1`` is a trained position, else IGNORE."""
    tgt = np.full(len(ids), IGNORE, dtype=np.int64)
    start = max(n_prompt, 1)
    tgt[start - 1 : len(ids) - 1] = ids[start:]
    return tgt


def packed_batch(seqs: Sequence[tuple[np.ndarray, int]], boundaries: bool = True) -> dict[str, Any]:
    """One padding-free row from ``(ids, n_prompt)`` samples: tensors for the forward, plus ``targets``."""
    import torch

    lengths = [len(ids) for ids, _ in seqs]
    input_ids = torch.from_numpy(np.concatenate([ids for ids, _ in seqs]).astype(np.int64))[None]
    position_ids = torch.from_numpy(np.concatenate([np.arange(n, dtype=np.int64) for n in lengths]))[None]
    targets = torch.from_numpy(np.concatenate([row_targets(ids, p) for ids, p in seqs]))[None]
    batch: dict[str, Any] = {"input_ids": input_ids, "position_ids": position_ids, "targets": targets}
    if boundaries:
        cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32)
        batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = cu
        batch["max_length_q"] = batch["max_length_k"] = int(max(lengths))
        # index of the sample each token belongs to: the short convolutions of linear-attention layers use it
        batch["seq_idx"] = torch.repeat_interleave(
            torch.arange(len(lengths), dtype=torch.int32), torch.tensor(lengths)
        )[None]
    return batch


def padded_batch(seqs: Sequence[tuple[np.ndarray, int]], pad_id: int) -> dict[str, Any]:
    """The unpacked baseline: rows right-padded to the longest, with a 2-D attention mask."""
    import torch

    width = max(len(ids) for ids, _ in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    targets = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    for r, (ids, p) in enumerate(seqs):
        n = len(ids)
        input_ids[r, :n] = torch.from_numpy(ids.astype(np.int64))
        attention_mask[r, :n] = 1
        targets[r, :n] = torch.from_numpy(row_targets(ids, p))
    return {"input_ids": input_ids, "attention_mask": attention_mask, "targets": targets}


def model_inputs(batch: dict[str, Any], device: Any = None) -> dict[str, Any]:
    """Forward kwargs of a batch (everything but ``targets``), on ``device``; never a KV cache."""
    out: dict[str, Any] = {"use_cache": False}
    for k, v in batch.items():
        if k == "targets":
            continue
        out[k] = v.to(device) if device is not None and hasattr(v, "to") else v
    return out


def loss_sum(model: Any, batch: dict[str, Any], device: Any = None, chunk: int = 4096) -> tuple[Any, int]:
    """Summed next-token cross-entropy over the batch's target positions, and their count.

    Only target positions go through the LM head (``logits_to_keep``), which skips the prompt tokens' vocab
    projection.  When the kept logits are large (long sequences, 150k+ vocabularies) the fp32 cross-entropy
    is computed chunk by chunk under activation checkpointing, so at most one chunk's fp32 copy is alive.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    targets = batch["targets"].to(device) if device is not None else batch["targets"]
    inputs = model_inputs(batch, device)
    if targets.shape[0] == 1:
        keep = (targets[0] != IGNORE).nonzero().flatten()
        logits = model(**inputs, logits_to_keep=keep).logits[0]
        tgt = targets[0, keep]
    else:
        logits = model(**inputs).logits
        mask = targets != IGNORE
        logits, tgt = logits[mask], targets[mask]

    def ce(x: Any, t: Any) -> Any:
        return F.cross_entropy(x.float(), t, reduction="sum")

    n = int(tgt.numel())
    if logits.numel() <= (1 << 26) or not logits.requires_grad:
        return ce(logits, tgt), n
    total = logits.new_zeros((), dtype=torch.float32)
    for s in range(0, n, chunk):
        total = total + checkpoint(ce, logits[s : s + chunk], tgt[s : s + chunk], use_reentrant=False)
    return total, n


VARLEN_SDPA = "sdpa_varlen"


def register_varlen_sdpa() -> str:
    """Register ``sdpa_varlen``: exact variable-length attention for packed rows without flash-attn.

    Each packed sample's slice of q/k/v goes through causal SDPA on its own (boundaries from
    ``cu_seq_lens_q``), so attention costs sum(len_i^2) instead of len_total^2 and no len_total^2 block mask
    is ever built (at 16k tokens that mask alone is 256M entries per forward).  Its mask hook is the flash one,
    which returns no mask for padding-free rows.  Only for plain causal attention (no sliding window, no sinks).
    """
    import torch
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    def varlen_sdpa(
        module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any
    ) -> tuple[Any, None]:
        cu = kwargs.pop("cu_seq_lens_q", None)
        if cu is None or query.shape[0] != 1 or attention_mask is not None:
            raise PackingError(
                f"{VARLEN_SDPA} attention serves padding-free packed rows with cu_seq_lens_q only"
            )
        kwargs.pop("is_causal", None)
        bounds = cu.tolist()
        outs = [
            sdpa_attention_forward(
                module, query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], None, is_causal=True, **kwargs
            )[0]
            for s, e in itertools.pairwise(bounds)
        ]
        return torch.cat(outs, dim=1), None

    AttentionInterface.register(VARLEN_SDPA, varlen_sdpa)
    AttentionMaskInterface.register(VARLEN_SDPA, flash_attention_mask)
    return VARLEN_SDPA


def plain_causal(config: Any) -> bool:
    """Full causal attention in every layer (no sliding windows, no attention sinks): ``sdpa_varlen`` is exact."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = [str(t) for t in (getattr(text, "layer_types", None) or [])]
    sliding = getattr(text, "sliding_window", None) is not None and getattr(text, "use_sliding_window", True)
    return (
        not sliding
        and not any("sliding" in t or "chunk" in t for t in layer_types)
        and (getattr(text, "model_type", "") not in ("gpt_oss",))
    )


def has_linear_attention(model: Any) -> bool:
    """True when the model mixes in recurrent/linear-attention layers (Gated DeltaNet, Mamba, ...)."""
    cfg = getattr(model, "config", None)
    text_cfg = cfg.get_text_config() if cfg is not None and hasattr(cfg, "get_text_config") else cfg
    layer_types = getattr(text_cfg, "layer_types", None) or []
    if any("linear" in str(t) or "mamba" in str(t) for t in layer_types):
        return True
    return any(
        any(tag in type(m).__name__ for tag in ("GatedDeltaNet", "LinearAttention", "Mamba", "DeltaNet"))
        for m in model.modules()
    )


def check_packing(
    model: Any,
    seqs: Sequence[tuple[np.ndarray, int]],
    boundaries: bool,
    device: Any = None,
    tol: float = 1e-3,
) -> float:
    """Compare a packed forward with per-row forwards on the real model; raise if rows leak into each other.

    Returns the largest absolute logit difference relative to the largest logit magnitude.  Leakage shows up as
    O(1) relative differences (measured 1.3-3.5 absolute on ~20-magnitude logits); numerical noise is ~1e-6
    in fp32 and ~1e-2 in bf16, so the caller passes ``tol`` for its dtype.
    """
    import torch

    fix = (
        "Install kernels that honour sequence boundaries (flash-attn for attention; flash-linear-attention + "
        "causal-conv1d for Gated DeltaNet) or set train.packing: false"
    )
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            packed = packed_batch(seqs, boundaries=boundaries)
            try:
                joint = model(**model_inputs(packed, device)).logits[0].float()
            except ValueError as err:  # transformers refuses boundaries its fallback kernels cannot honour
                reason = str(err).rstrip(".")
                raise PackingError(f"this model cannot keep packed rows apart here: {reason}. {fix}") from err
            worst, scale, offset = 0.0, 1e-6, 0
            for ids, p in seqs:
                alone = packed_batch([(ids, p)], boundaries=boundaries)
                single = model(**model_inputs(alone, device)).logits[0].float()
                part = joint[offset : offset + len(ids)]
                worst = max(worst, float((part - single).abs().max()))
                scale = max(scale, float(single.abs().max()))
                offset += len(ids)
    finally:
        model.train(was_training)
    rel = worst / scale
    if rel > tol:
        kind = "linear-attention layers" if has_linear_attention(model) else "attention"
        raise PackingError(
            f"packed rows are not isolated with this model's {kind} (max logit difference {worst:.3g}, "
            f"{rel:.2%} of the logit scale, vs each row alone). {fix}"
        )
    return rel
