"""The trainer on the real SmolLM2 on CPU: schedule, LoRA and full runs, outputs, metrics, kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from compress_distill.config import TrainConfig
from compress_distill.llm.tokens import trained_eot_id
from compress_distill.training.data import Encoded
from compress_distill.training.trainer import build_schedule
from tests.helpers.training import trace_rows, write_params, write_source

RUN = "smol-smol-lora-raw"


def fake_encoded(lengths: list[int], prompt: int = 4) -> Encoded:
    enc = Encoded()
    for n in lengths:
        enc.ids.append(np.arange(n, dtype=np.int32))
        enc.n_prompt.append(prompt)
    return enc


def rows_trained(schedule) -> Counter[int]:  # type: ignore[no-untyped-def]
    return Counter(i for u in schedule.order for i in schedule.units[u])


def test_one_epoch_trains_every_row_once_and_epochs_reshuffle() -> None:
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in np.clip(rng.lognormal(3.5, 0.8, 200), 6, 256)]
    enc = fake_encoded(lengths)
    cfg = TrainConfig(seq_len=256, micro_batch_size=2, grad_accum=3, epochs=1.0)
    one = build_schedule(enc, cfg, world_size=1, reference_tokens=None)
    assert rows_trained(one) == Counter(range(200))
    assert one.steps == -(-len(one.units) // 6) and one.epochs_effective == pytest.approx(1.0)
    two = build_schedule(enc, cfg.model_copy(update={"epochs": 2.0}), 1, None)
    assert set(rows_trained(two).values()) == {2}
    n = len(two.units)
    assert (
        two.order[:n] == one.order
        and sorted(two.order[n:]) == sorted(one.order)
        and two.order[n:] != one.order
    )
    # steps in an exact count, cycling epochs as needed
    capped = build_schedule(enc, cfg.model_copy(update={"max_steps": 50}), 1, None)
    assert capped.steps == 50 and len(capped.order) == 300


def test_compute_matched_budget_scales_to_the_reference_tokens() -> None:
    enc = fake_encoded([40, 60, 80, 100] * 10)
    per_epoch = enc.trainable_tokens
    cfg = TrainConfig(seq_len=128, grad_accum=1, budget="compute_matched")
    matched = build_schedule(enc, cfg, 1, reference_tokens=3 * per_epoch)
    trained = sum(matched.unit_targets[u] for u in matched.order)
    assert 3 * per_epoch <= trained < 3 * per_epoch + max(matched.unit_targets)
    assert matched.epochs_effective == pytest.approx(3.0, rel=0.03)
    # a shorter source (compressed) gets proportionally more steps for the same reference
    short = fake_encoded([20, 30, 40, 50] * 10)
    assert build_schedule(short, cfg, 1, 3 * per_epoch).steps > matched.steps


def test_flops_budget_trains_every_source_and_student_to_the_same_flops() -> None:
    from compress_distill.flops import tokens_for_flops, train_flops

    cfg = TrainConfig(seq_len=128, grad_accum=1, budget="flops", flops_budget=5e13)
    reached = {}
    for name, n_params, lengths in (
        ("raw, small", 135_000_000, [40, 60, 80, 100] * 10),
        ("answer-only, small", 135_000_000, [10, 12, 14] * 10),  # short rows: several epochs
        ("ift, 3x larger", 405_000_000, [10, 12, 14] * 10),  # a larger student: fewer tokens
    ):
        enc = fake_encoded(lengths)
        sched = build_schedule(enc, cfg, 1, None, tokens_for_flops(n_params, 5e13))
        tokens = sum(sched.unit_tokens[u] for u in sched.order)
        reached[name] = train_flops(n_params, tokens)
        # at the budget, at most one packed bin above it
        assert 5e13 <= reached[name] < 5e13 + train_flops(n_params, max(sched.unit_tokens)), name
    assert reached["answer-only, small"] == pytest.approx(reached["raw, small"], rel=0.01)
    assert reached["ift, 3x larger"] == pytest.approx(reached["raw, small"], rel=0.01)
    with pytest.raises(ValueError, match="train.flops_budget is not set"):
        TrainConfig(budget="flops")


def test_micro_batches_split_evenly_over_ranks() -> None:
    enc = fake_encoded([50] * 7)
    cfg = TrainConfig(seq_len=64, micro_batch_size=1, grad_accum=2, packing=False)
    sched = build_schedule(enc, cfg, world_size=2, reference_tokens=None)
    assert sched.steps == 2  # 7 rows, 4 per step
    last = [sched.micro_batches(1, r) for r in (0, 1)]
    assert [len(m) for m in last] == [2, 2]  # equal counts: FSDP collectives stay in lockstep
    active = [u for m in last for units, on in m if on for u in units]
    assert sorted(active) == sorted(sched.step_units(1)) and len(active) == 3
    assert sum(not on for m in last for _, on in m) == 1  # one zero-weight filler


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


SMOL_ALIAS = "smollm2-135m-instruct"  # the params model id of the student
LORA_TRAIN = {"max_steps": 10, "seq_len": 128, "save_every_steps": 4, "lora": {"learning_rate": 0.003}}


PAPER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def adapted(model) -> set[str]:  # type: ignore[no-untyped-def]
    """Full names of the modules peft wrapped with a LoRA adapter."""
    return {n.removeprefix("base_model.model.") for n, m in model.named_modules() if hasattr(m, "lora_A")}


def test_lora_adapts_exactly_the_configured_targets_on_a_hybrid_model() -> None:
    # the hybrid Qwen3.5 used to get every Linear of its Gated DeltaNet blocks adapted as well
    from compress_distill.training.trainer import add_lora
    from tests.helpers.training import tiny_qwen35

    cfg = TrainConfig(lora={"r": 2, "alpha": 4, "target_modules": PAPER_TARGETS})
    model, targets = add_lora(tiny_qwen35(), cfg)
    names = adapted(model)
    assert targets == PAPER_TARGETS
    assert {n.rsplit(".", 1)[-1] for n in names} == set(PAPER_TARGETS)
    assert not any("linear_attn" in n for n in names), sorted(names)
    # extra capacity only when asked for in params
    cfg = TrainConfig(lora={"r": 2, "alpha": 4, "target_modules": [*PAPER_TARGETS, "in_proj_qkv"]})
    model, targets = add_lora(tiny_qwen35(), cfg)
    assert targets[-1] == "in_proj_qkv" and any(n.endswith("linear_attn.in_proj_qkv") for n in adapted(model))


def test_lora_target_matching_no_module_is_an_error_listing_the_linear_layers() -> None:
    # one misspelt target used to be skipped with a warning, silently training fewer adapters
    from compress_distill.config import ConfigError
    from compress_distill.training.trainer import add_lora
    from tests.helpers.training import tiny_qwen35

    cfg = TrainConfig(lora={"target_modules": ["q_proj", "v_prj"]})
    with pytest.raises(ConfigError) as err:
        add_lora(tiny_qwen35(), cfg)
    msg = str(err.value)
    assert "train.lora.target_modules" in msg and "['v_prj']" in msg
    for name in ("q_proj", "v_proj", "down_proj", "in_proj_qkv", "out_proj"):
        assert name in msg.split("Linear layers:")[-1]
    with pytest.raises(ConfigError, match="empty list"):
        add_lora(tiny_qwen35(), TrainConfig(lora={"target_modules": []}))


def test_check_finite_names_the_step_and_the_learning_rate_key() -> None:
    from compress_distill.training.trainer import TrainingDiverged, check_finite

    check_finite("r", 1, 2, 1.5, 0.3, "train.lora.learning_rate", 1e-4)
    for loss, norm in ((float("nan"), 1.0), (1.0, float("inf")), (float("-inf"), float("nan"))):
        match = r"r diverged at step 2 of 3: .*train\.full\.learning_rate"
        with pytest.raises(TrainingDiverged, match=match):
            check_finite("r", 2, 3, loss, norm, "train.full.learning_rate", 1e30)


def test_diverging_run_exits_non_zero_and_leaves_previous_outputs(tmp_path: Path) -> None:
    """A huge (finite) learning rate turns the LoRA weights non-finite after the first update: the run used to
    exit 0 with an all-NaN adapter (the same with ``learning_rate: .inf``, now refused at load)."""
    data = write_source(tmp_path / "hub", "smol", "raw", trace_rows(4, max_steps=2))
    params = write_params(
        tmp_path / "params.yaml", max_steps=3, seq_len=96, warmup_ratio=0.0, lora={"learning_rate": 1e30}
    )
    out, metrics = tmp_path / "models" / RUN, tmp_path / "m.json"
    out.mkdir(parents=True)
    (out / "adapter_model.safetensors").write_text("previous adapter")
    metrics.write_text('{"final_loss": 0.5}')
    cmd = [
        *(sys.executable, "-m", "compress_distill.cli", "train", "--params", str(params), "--run", RUN),
        *("--data-dir", str(data), "--out-dir", str(out), "--metrics", str(metrics)),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COMPRESS_DISTILL_PROGRESS_S": "0"}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    err = " ".join(proc.stderr.replace("│", " ").split())  # the CLI may wrap the line in a box
    assert "diverged at step 2 of 3" in err and "train.lora.learning_rate" in err
    assert f"train {RUN}: 1/3 steps (33%)" in err  # the step before, in the job's log (a pipe, no terminal)
    assert "Traceback" not in err
    assert [p.name for p in out.iterdir()] == ["adapter_model.safetensors"]
    assert (out / "adapter_model.safetensors").read_text() == "previous adapter"
    assert metrics.read_text() == '{"final_loss": 0.5}'


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, smol_dir: str) -> dict[str, Path]:
    """A real 10-step LoRA run of the stage on CPU (checkpoints every 4 steps), shared by the tests below."""
    import torch as _torch

    from compress_distill.stages.train import run

    root = tmp_path_factory.mktemp("lora")
    data = write_source(root / "hub", "smol", "raw", trace_rows(8, max_steps=3))
    params = write_params(root / "params.yaml", **LORA_TRAIN)
    threads = _torch.get_num_threads()
    _torch.set_num_threads(
        1
    )  # as the subprocesses of the resume test (OMP_NUM_THREADS=1): bitwise comparable
    try:
        run(params, RUN, data, root / "models" / RUN, root / "m.json", root / "live")
    finally:
        _torch.set_num_threads(threads)
    return {"root": root, "data": data, "params": params}


def test_lora_run_learns_and_writes_outputs(lora_run: dict[str, Path], smol_dir: str) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from compress_distill.metrics import read_metrics

    root = lora_run["root"]
    out, live = root / "models" / RUN, root / "live"
    # the loss goes down (first step vs the mean of the last three; 8 rows seen ~4 times each)
    losses = [float(r[1]) for r in read_tsv(live / "plots" / "metrics" / "loss.tsv")[1:]]
    assert len(losses) == 10
    assert np.mean(losses[-3:]) < 0.6 * losses[0], losses
    # metrics: the docs/architecture.md §6 keys and the row accounting
    saved = read_metrics(root / "m.json")
    for key in (
        "trainable_tokens",
        "packed_sequences",
        "padding_fraction",
        "wall_clock_s",
        "tokens_per_s",
        "gpu_hours",
        "final_loss",
        "rows_in",
        "rows_out",
        "rejects",
    ):
        assert key in saved, key
    assert saved["final_loss"] == pytest.approx(losses[-1])
    assert saved["rows_in"] == 8 == saved["rows_out"] and saved["rejects"] == {}
    # validation: 5% of 8 rows rounds to 0, but a source of >= 2 rows holds out at least 1 (params default)
    assert saved["val_rows"] == 1 and np.isfinite(saved["val_loss"])
    val = read_tsv(live / "plots" / "metrics" / "val_loss.tsv")
    assert [int(r[0]) for r in val[1:]] == [4, 8, 10]  # every checkpoint step and the last one
    assert saved["val_loss"] == pytest.approx(float(val[-1][1]))
    assert float(val[-1][1]) < float(val[1][1])  # the held-out row's loss falls too
    assert saved["padding_fraction"] == 0.0 and saved["gpu_hours"] == 0.0 and saved["steps"] == 10
    assert saved["packed_sequences"] >= 1 and saved["tokens_per_s"] > 0
    # the model folder: a peft adapter the evaluation engine can load on its base
    cfg = json.loads((out / "training_config.json").read_text())
    assert cfg["base_model"] == "smollm2-135m-instruct" and cfg["method"] == "lora"
    assert cfg["source"] == "raw" and cfg["run"] == RUN and cfg["train"]["max_steps"] == 10
    assert cfg["eot_token"] == "<|im_end|>"
    assert cfg["lora_target_modules"] == PAPER_TARGETS
    assert (out / "adapter_config.json").exists() and (out / "tokenizer_config.json").exists()
    # portable: the base is named as in params, never by this machine's cache path
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == SMOL_ALIAS
    for saved_json in [*out.glob("*.json"), *out.glob("*.md")]:
        assert smol_dir not in saved_json.read_text(), saved_json.name
    assert not (root / "models" / ".checkpoints" / RUN).exists()  # finished: checkpoints cleaned up
    base = AutoModelForCausalLM.from_pretrained(smol_dir, dtype=torch.float32)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        before = base(ids).logits
        tuned = PeftModel.from_pretrained(base, out)(ids).logits
    assert float((tuned - before).abs().max()) > 1e-3


def test_full_finetune_unpacked_writes_full_weights(
    tmp_path: Path, smol_dir: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM

    from compress_distill.progress import PROGRESS_INTERVAL_ENV
    from compress_distill.stages.train import run

    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0")  # a progress line after every step

    data = write_source(tmp_path / "hub", "smol", "answer-only", trace_rows(4, source="answer-only"))
    params = write_params(
        tmp_path / "params.yaml",
        methods=("full",),
        max_steps=2,
        seq_len=96,
        packing=False,
        micro_batch_size=2,
    )
    out = tmp_path / "models" / "smol-smol-full-answer-only"
    metrics = run(params, "smol-smol-full-answer-only", data, out, tmp_path / "m.json", None)
    # stderr is captured, not a terminal (a cluster job's log): the trainer logged its progress there (it used
    # to log nothing: its lines went to an unconfigured logger)
    lines = [
        line for line in capsys.readouterr().err.splitlines() if "train smol-smol-full-answer-only:" in line
    ]
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines] == ["1/2 steps", "2/2 steps"], lines
    assert all(" tok/s, loss " in line and ", ETA " in line for line in lines), lines
    assert lines[-1].endswith("ETA 00:00:00")
    assert metrics["packed_sequences"] == 0 and 0.0 < metrics["padding_fraction"] < 0.5
    assert metrics["trainable_params"] > 100_000_000
    # full fine-tuning trains every parameter: N of the config-based FLOP count is exactly that
    assert metrics["model_params"] == metrics["trainable_params"]
    assert metrics["train_flops"] == 6.0 * metrics["model_params"] * metrics["trained_tokens"]
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    saved_cfg = json.loads((out / "training_config.json").read_text())
    assert saved_cfg["method"] == "full"
    # the trained end-of-turn token is recorded with a checkpoint as with an adapter: every backend's stop
    assert saved_cfg["eot_token"] == "<|im_end|>" and trained_eot_id(out) == saved_cfg["eot_token_id"] >= 0
    for saved_json in [*out.glob("*.json"), *out.glob("*.md")]:  # no file names the cache path
        assert smol_dir not in saved_json.read_text(), saved_json.name
    tuned = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(smol_dir, dtype=torch.float32)
    diff = (tuned.model.layers[0].mlp.up_proj.weight - base.model.layers[0].mlp.up_proj.weight).abs().max()
    assert float(diff) > 0


def test_compute_matched_reference_is_the_raw_source(tmp_path: Path, smol_tokenizer) -> None:  # type: ignore[no-untyped-def]
    from compress_distill.stages.train import reference_tokens
    from compress_distill.training.data import encode_rows, read_source, split_validation

    hub = tmp_path / "hub"
    raw = write_source(hub, "smol", "raw", trace_rows(12, max_steps=6))
    short = write_source(hub, "smol", "compressed-terse", trace_rows(12, max_steps=1))
    cfg = TrainConfig(seq_len=512, budget="compute_matched")
    raw_all = encode_rows(smol_tokenizer, read_source(raw), 512)
    raw_train, raw_val = split_validation(raw_all, cfg.val_fraction, cfg.seed)
    own_train, own_val = split_validation(encode_rows(smol_tokenizer, read_source(short), 512), 0.05, 0)
    assert raw_val.row_ids == own_val.row_ids  # sources sharing ids hold out the same questions
    own = own_train.trainable_tokens
    # the reference is the raw source's training rows: its validation rows are never trained on
    assert raw_train.trainable_tokens < raw_all.trainable_tokens
    reference = reference_tokens(smol_tokenizer, short, cfg, own, "compressed-terse")
    assert reference == raw_train.trainable_tokens > own
    assert (
        reference_tokens(smol_tokenizer, short, cfg.model_copy(update={"budget_tokens": 777}), own, "x")
        == 777
    )


# --------------------------------------------------------------------------------------------- resume
def train_cmd(params: Path, data: Path, root: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "compress_distill.stages.train",
        "--params",
        str(params),
        "--run",
        RUN,
        "--data-dir",
        str(data),
        "--out-dir",
        str(root / "models" / RUN),
        "--metrics",
        str(root / "m.json"),
        "--live-dir",
        str(root / "live"),
    ]


def adapter(root: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(root / "models" / RUN / "adapter_model.safetensors"))


def test_killed_run_resumes_to_the_same_weights(lora_run: dict[str, Path], tmp_path: Path) -> None:
    """SIGKILL the stage right after a checkpoint lands; the rerun resumes and matches the uninterrupted run
    (lora_run: same params, LoRA dropout on, so the RNG streams must be restored too)."""
    params, data, straight = lora_run["params"], lora_run["data"], lora_run["root"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    ckpt = killed / "models" / ".checkpoints" / RUN
    proc = subprocess.Popen(
        train_cmd(params, data, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not list(ckpt.glob("checkpoint-*/progress.json")):
        assert proc.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # a real kill, mid-run, right after a checkpoint landed
    proc.wait()
    assert not (killed / "models" / RUN).exists()
    done = subprocess.run(
        train_cmd(params, data, killed), check=True, env=env, capture_output=True, timeout=600
    )
    assert b"10 steps" in done.stdout

    resumed = json.loads((killed / "m.json").read_text())
    assert resumed["resumed_from_step"] in (4, 8)
    a, b = adapter(straight), adapter(killed)
    assert a.keys() == b.keys() and len(a) > 0
    assert max(float((a[k] - b[k]).abs().max()) for k in a) == 0.0
    # the replayed loss curve equals the uninterrupted one
    curve = "plots/metrics/loss.tsv"
    assert read_tsv(straight / "live" / curve) == read_tsv(killed / "live" / curve)
    assert resumed["final_loss"] == json.loads((straight / "m.json").read_text())["final_loss"]


def test_accelerate_launch_two_ranks_matches_one_process(tmp_path: Path) -> None:
    """`accelerate launch` (2 CPU ranks, DDP) ends with the weights of one process accumulating both ranks'
    micro-batches: same schedule, token-weighted loss scaled by world size.  Dropout off (per-rank RNG)."""
    from compress_distill.stages.train import run

    data = write_source(tmp_path / "hub", "smol", "raw", trace_rows(6, max_steps=2))
    common = {"max_steps": 2, "seq_len": 96, "lora": {"dropout": 0.0, "learning_rate": 0.003}}
    single = write_params(tmp_path / "single.yaml", grad_accum=2, **common)
    run(single, RUN, data, tmp_path / "one" / "models" / RUN, tmp_path / "one" / "m.json", None)
    # the 2-rank run reads params with grad_accum 1: 2 ranks x 1 micro-batch = the same 2 bins per step
    ddp = write_params(tmp_path / "ddp.yaml", grad_accum=1, **common)
    # --multi_gpu makes accelerate start torchrun workers; with train.device cpu they form a gloo (MULTI_CPU)
    # group.  (`--cpu --num_processes 2` would start a single process.)
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd = launcher + train_cmd(ddp, data, tmp_path / "two")[1:]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert done.stdout.count(b"2 steps") == 1  # only the main rank reports
    a, b = adapter(tmp_path / "one"), adapter(tmp_path / "two")
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
    moved = max(float(b[k].abs().max()) for k in b if "lora_B" in k)
    assert moved > 1e-4  # lora_B starts at zero: the comparison is not between two untouched adapters
    one, two = (json.loads((tmp_path / d / "m.json").read_text()) for d in ("one", "two"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert two["trained_tokens"] == one["trained_tokens"]
    assert two["final_loss"] == pytest.approx(one["final_loss"], rel=1e-5)


# --------------------------------------------------------------------------------------------- gpu
@pytest.mark.gpu
def test_bf16_lora_run_on_gpu(tmp_path: Path) -> None:
    from compress_distill.stages.train import run

    data = write_source(tmp_path / "hub", "smol", "raw", trace_rows(64))
    params = write_params(tmp_path / "params.yaml", max_steps=10, seq_len=1024, device="cuda", grad_accum=2)
    metrics = run(params, RUN, data, tmp_path / "models" / RUN, tmp_path / "m.json", None)
    cfg = json.loads((tmp_path / "models" / RUN / "training_config.json").read_text())
    print(f"GPU bf16 LoRA: {metrics['tokens_per_s']:.0f} tokens/s ({cfg['attn_implementation']})")
    assert metrics["gpus"] == 1 and metrics["gpu_hours"] > 0
    assert np.isfinite(metrics["final_loss"]) and metrics["final_loss"] < metrics["first_loss"]


@pytest.mark.parametrize("total", [1, 2, 3, 10])
def test_warmup_never_leaves_a_run_at_learning_rate_zero(total: int) -> None:
    # issue 13: ceil(0.1 x 1) = 1 warm-up step of 1 -> HF's schedule gave the demo's only step learning rate 0
    import torch
    from transformers import get_cosine_schedule_with_warmup

    from compress_distill.training.trainer import warmup_steps

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = get_cosine_schedule_with_warmup(opt, warmup_steps(0.1, total), total)
    rates = []
    for _ in range(total):
        rates.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert max(rates) > 0, rates
    assert warmup_steps(0.1, 100) == 10  # the paper-scale rounding is unchanged
