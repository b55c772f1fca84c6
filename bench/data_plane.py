"""Data-plane benchmark: truncate, answer-only and build on a synthetic corpus at the paper's scale.

The corpus copies the Qwen teacher's profile of paper Table 4 (283,335 accepted traces; per-dataset counts and
mean reasoning chars, lognormal around each mean) and Table 5 (per-dataset compression ratios of the two
compressors), with judgements for both; ~2.0 billion reasoning chars, ~0.6 billion raw tokens.  Each stage runs
as its real CLI in a child process so wall time and peak RSS (``wait4``) are the stage's own.  Targets (issue 4,
2 cores): truncate <= 10 min, build <= 2 min, answer-only <= 30 s, peak RSS <= 8 GB.

    python bench/data_plane.py              # full scale (needs ~3 GB of temp disk)
    python bench/data_plane.py --scale 0.1  # a fraction of every dataset

Prints each stage's figures side by side and writes ``metrics/bench/data_plane.json``.  Also checks the
prefix-tokenisation cut of truncate against a full tokenisation on a sample of rows (must be 0 mismatches).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from compress_distill.schema import JUDGEMENTS, TRACES

TOKENIZER = "smollm2-135m-instruct"
# paper Table 4 (Qwen3.5-397B teacher): dataset -> (domain, accepted traces, mean reasoning chars)
TABLE4 = {
    "aqua_rat": ("math", 87_441, 7_583),
    "gsm8k": ("math", 7_186, 4_688),
    "multiarith": ("math", 416, 1_750),
    "svamp": ("math", 960, 2_926),
    "arc_challenge": ("science", 1_079, 4_264),
    "gpqa_diamond": ("science", 135, 18_734),
    "commonsense_qa": ("logic", 8_593, 6_418),
    "medexpqa": ("medicine", 395, 11_541),
    "medmcqa": ("medicine", 167_277, 6_801),
    "medqa": ("medicine", 9_778, 10_806),
    "mmlu_medical": ("medicine", 33, 9_876),
    "mmlu_stem": ("science", 42, 9_347),
}
# paper Table 5 (Qwen teacher): mean compression ratio (Llama-3.3-70B, Ministral-3-14B); MMLU rows use Overall
TABLE5 = {
    "aqua_rat": (0.136, 0.063),
    "gsm8k": (0.131, 0.063),
    "multiarith": (0.253, 0.126),
    "svamp": (0.178, 0.101),
    "arc_challenge": (0.214, 0.122),
    "gpqa_diamond": (0.089, 0.054),
    "commonsense_qa": (0.134, 0.088),
    "medexpqa": (0.114, 0.096),
    "medmcqa": (0.147, 0.100),
    "medqa": (0.127, 0.097),
}
OVERALL5 = (0.142, 0.086)
COMPRESSORS = ("llama70b", "ministral14b")
TARGETS_S = {"truncate": 600.0, "build": 120.0, "answer-only": 30.0}
RSS_TARGET_GB = 8.0
BATCH = 8_192
VOCAB = [
    "the",
    "so",
    "we",
    "then",
    "let",
    "compute",
    "check",
    "answer",
    "option",
    "because",
    "therefore",
    "first",
    "second",
    "next",
    "total",
    "each",
    "patient",
    "diagnosis",
    "treatment",
    "dose",
    "mg",
    "cell",
    "protein",
    "energy",
    "force",
    "velocity",
    "probability",
    "ratio",
    "sum",
    "product",
    "x",
    "y",
    "z",
    "n",
    "k",
    "=",
    "+",
    "-",
    "*",
    "/",
    "(",
    ")",
    ",",
    ".",
    ":",
    ";",
    "**",
    "Step",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "10",
    "12",
    "15",
    "20",
    "24",
    "36",
    "48",
    "100",
    "0.5",
    "3.14",
    "Wait,",
    "Hmm,",
    "Actually,",
    "Alternatively,",
    "verify:",
    "(A)",
    "(B)",
    "(C)",
    "(D)",
    "is",
    "are",
    "was",
    "not",
    "if",
    "then",
    "else",
]


def word_pool(n_bytes: int, seed: int) -> np.ndarray:
    """ASCII text of random vocabulary words with spaces and newlines, as a uint8 array (slices stay UTF-8)."""
    rng = np.random.default_rng(seed)
    words = np.array(VOCAB + ["\n", "\n\n"], dtype=object)
    weights = np.ones(len(words))
    weights[-2:] = [8, 2]  # a newline every ~12 words
    chunks, size = [], 0
    while size < n_bytes:
        picked = rng.choice(words, size=1_000_000, p=weights / weights.sum())
        blob = " ".join(picked).encode("ascii")
        chunks.append(blob)
        size += len(blob)
    return np.frombuffer(b"".join(chunks)[:n_bytes], dtype=np.uint8)


def slices(pool: np.ndarray, lengths: np.ndarray, rng: np.random.Generator) -> pa.Array:
    """A string array of random pool slices with the given lengths, built from buffers (no Python strs)."""
    lengths = np.minimum(lengths.astype(np.int64), len(pool) - 1)
    starts = rng.integers(0, len(pool) - lengths)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = (
        np.concatenate([pool[s : s + n] for s, n in zip(starts, lengths, strict=True)])
        if len(lengths)
        else np.zeros(0, np.uint8)
    )
    return pa.LargeStringArray.from_buffers(len(lengths), pa.py_buffer(offsets), pa.py_buffer(data)).cast(
        pa.string()
    )


def chars_per_token(pool: np.ndarray) -> float:
    from compress_distill.llm.tokens import fast_tokenizer

    sample = bytes(pool[:2_000_000]).decode("ascii")
    return len(sample) / len(fast_tokenizer(TOKENIZER).encode(sample, add_special_tokens=False))


def make_corpus(root: Path, scale: float, seed: int) -> dict[str, float]:
    """Write raw, two compressed configs and their judgements under root/traces and root/judgements."""
    rng = np.random.default_rng(seed)
    pool = word_pool(64 << 20, seed)
    cpt = chars_per_token(pool)
    traces, judged = root / "traces" / "bench", root / "judgements" / "bench"
    traces.mkdir(parents=True)
    judged.mkdir(parents=True)
    writers = {
        name: pq.ParquetWriter(traces / f"{name}.parquet", TRACES, compression="zstd")
        for name in ("raw", *(f"compressed-{c}" for c in COMPRESSORS))
    }
    jwriters = {
        c: pq.ParquetWriter(judged / f"{c}.parquet", JUDGEMENTS, compression="zstd") for c in COMPRESSORS
    }
    totals = {"rows": 0, "raw_chars": 0, "raw_tokens_est": 0.0}
    for ds, (domain, count, mean_chars) in TABLE4.items():
        n_all = max(1, round(count * scale))
        for start in range(0, n_all, BATCH):
            n = min(BATCH, n_all - start)
            # lognormal, sigma 0.6, scaled so the mean is the Table 4 mean
            raw_len = np.maximum(50, rng.lognormal(np.log(mean_chars) - 0.18, 0.6, n)).astype(np.int64)
            ids = pa.array([f"{ds}/train/{start + i}" for i in range(n)])
            base = {
                "id": ids,
                "question_id": ids,
                "dataset": pa.array([ds] * n),
                "domain": pa.array([domain] * n),
                "question": slices(pool, rng.integers(100, 600, n), rng),
                "answer": pa.array(["B"] * n),
                "answer_type": pa.array(["letter"] * n),
                "response": slices(pool, rng.integers(20, 200, n), rng),
                "teacher_model": pa.array(["Qwen/Qwen3.5-397B-A17B-FP8"] * n),
            }
            raw = slices(pool, raw_len, rng)
            writers["raw"].write_table(
                pa.table(
                    {
                        **base,
                        "reasoning": raw,
                        "source": pa.array(["raw"] * n),
                        "reasoning_chars": pa.array(raw_len),
                        "reasoning_tokens": pa.array((raw_len / cpt).astype(np.int64)),
                        "compression_ratio": pa.array(np.ones(n)),
                        "compressor_model": pa.array([""] * n),
                        "prompt_hash": pa.array(["0123456789ab"] * n),
                        "answer_preserved": pa.nulls(n, pa.bool_()),
                    },
                    schema=TRACES,
                ),
                row_group_size=BATCH,
            )
            totals["rows"] += n
            totals["raw_chars"] += int(raw_len.sum())
            totals["raw_tokens_est"] += float(raw_len.sum() / cpt)
            for k, c in enumerate(COMPRESSORS):
                ratio = np.clip(rng.normal(TABLE5.get(ds, OVERALL5)[k], 0.03, n), 0.01, 0.9)
                comp_len = np.maximum(8, (raw_len * ratio).astype(np.int64))
                writers[f"compressed-{c}"].write_table(
                    pa.table(
                        {
                            **base,
                            "reasoning": slices(pool, comp_len, rng),
                            "source": pa.array([f"compressed-{c}"] * n),
                            "reasoning_chars": pa.array(comp_len),
                            # the budget truncate cuts to: the compressed trace's tokens in the compressor's tokenizer
                            "reasoning_tokens": pa.array(np.maximum(1, (comp_len / cpt)).astype(np.int64)),
                            "compression_ratio": pa.array(comp_len / raw_len),
                            "compressor_model": pa.array([c] * n),
                            "prompt_hash": pa.array(["0123456789ab+ba9876543210"] * n),
                            "answer_preserved": pa.array(rng.random(n) < 0.95),
                        },
                        schema=TRACES,
                    ),
                    row_group_size=BATCH,
                )
                faith = rng.choice([5, 5, 5, 4, 3], n).astype(np.int8)
                jwriters[c].write_table(
                    pa.table(
                        {
                            "id": ids,
                            "compressor": pa.array([c] * n),
                            "faithfulness": pa.array(faith),
                            "coverage": pa.array(faith),
                            "clarity": pa.array(faith),
                            "verdict": pa.array(np.where(faith >= 4, "faithful", "partially_faithful")),
                            "answer_alignment": pa.array(rng.random(n) < 0.97),
                            "failure_modes": pa.array(
                                [[] if f >= 4 else ["omitted_key_step"] for f in faith], pa.list_(pa.string())
                            ),
                            "rationale": slices(pool, rng.integers(60, 240, n), rng),
                            "judge_model": pa.array(["gpt-oss-120b"] * n),
                            "parse_status": pa.array(["ok"] * n),
                        },
                        schema=JUDGEMENTS,
                    ),
                    row_group_size=BATCH,
                )
    for w in [*writers.values(), *jwriters.values()]:
        w.close()
    totals["chars_per_token"] = cpt
    return totals


def write_bench_params(path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    engine = {"backend": "hf", "model": TOKENIZER, "device": "cpu"}
    params["teachers"] = {"bench": engine}
    params["compressors"] = {c: engine for c in COMPRESSORS}
    params["compress"]["prompts"] = {}
    params["truncate"] = {"bench": {"compressor": "ministral14b"}}
    params["build"]["pretty_name"] = "data-plane benchmark corpus"
    params["grid"] |= {"teachers": ["bench"], "sources": ["raw"]}
    for key in ("generate", "compress", "judge"):  # absolute prompt paths: the stages run in the temp dir
        params[key]["prompt"] = str(REPO / params[key]["prompt"])
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def _vm_hwm_kib(pid: int) -> int:
    """Peak RSS of the process's current address space (``VmHWM``; 0 once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def timed_stage(args: list[str], cwd: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS GB, output) of one ``compress-distill`` stage in a child process.

    Peak RSS is the child's ``VmHWM`` polled every 50 ms: ``ru_maxrss`` would not do, because Linux carries
    the parent's high-water mark across fork+exec, so every child would report at least this script's peak.
    """
    log = cwd / f"{args[0]}.log"
    start = time.perf_counter()
    peak = 0
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "compress_distill.cli", *args],
            cwd=cwd,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        while proc.poll() is None:
            peak = max(peak, _vm_hwm_kib(proc.pid))
            time.sleep(0.05)
    wall = time.perf_counter() - start
    out = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"stage {args[0]} failed (rc {proc.returncode}):\n{out[-4000:]}")
    return wall, peak / 1024**2, out


def check_cuts(root: Path, n: int, seed: int) -> dict[str, float]:
    """On a sample of rows: mismatches of truncate's cuts against a full-tokenisation cut (must be 0), and
    the time of the full tokenisation (the obvious implementation) vs the prefix cutter on the same rows."""
    from compress_distill.llm.tokens import fast_tokenizer
    from compress_distill.stages.truncate import Cutter

    tok = fast_tokenizer(TOKENIZER)
    cut = pq.read_table(
        root / "traces" / "bench" / "truncated.parquet", columns=["id", "reasoning", "reasoning_tokens"]
    )
    raw = pq.read_table(root / "traces" / "bench" / "raw.parquet", columns=["id", "reasoning"])
    raw_by_id = dict(zip(raw.column("id").to_pylist(), range(raw.num_rows), strict=True))
    picks = random.Random(seed).sample(range(cut.num_rows), min(n, cut.num_rows))
    texts = [raw.column("reasoning")[raw_by_id[cut.column("id")[i].as_py()]].as_py() for i in picks]
    budgets = [cut.column("reasoning_tokens")[i].as_py() for i in picks]
    t0 = time.perf_counter()
    encs = tok.encode_batch(texts, add_special_tokens=False)
    full_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    Cutter(tok).cut(texts, budgets)
    prefix_s = time.perf_counter() - t0
    bad = 0
    for i, text, k, enc in zip(picks, texts, budgets, encs, strict=True):
        expect = text if len(enc) <= k else text[: enc.token_to_chars(k - 1)[1]]
        bad += expect != cut.column("reasoning")[i].as_py()
    return {
        "rows": len(picks),
        "mismatches": bad,
        "full_tokenisation_s": round(full_s, 3),
        "prefix_cutter_s": round(prefix_s, 3),
        "speedup": round(full_s / prefix_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of each dataset's Table 4 count")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--workdir", type=Path, default=None, help="keep the corpus here (default: a temp dir, removed)"
    )
    ap.add_argument(
        "--check-rows", type=int, default=2_000, help="truncate rows re-checked by full tokenisation"
    )
    ap.add_argument("--out", type=Path, default=REPO / "metrics" / "bench" / "data_plane.json")
    a = ap.parse_args()

    root = a.workdir or Path(tempfile.mkdtemp(prefix="data-plane-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        corpus = make_corpus(root, a.scale, a.seed)
        gen_s = time.perf_counter() - t0
        write_bench_params(root / "params.yaml")
        print(
            f"corpus: {corpus['rows']:,} traces, {corpus['raw_chars'] / 1e9:.2f} G reasoning chars, "
            f"~{corpus['raw_tokens_est'] / 1e9:.3f} G raw tokens ({corpus['chars_per_token']:.2f} chars/token), "
            f"written in {gen_s:.0f} s",
            flush=True,
        )
        common = ["--params", "params.yaml", "--teacher", "bench"]
        stages = {
            "truncate": [
                "truncate",
                *common,
                "--raw",
                "traces/bench/raw.parquet",
                "--compressed",
                "traces/bench/compressed-ministral14b.parquet",
                "--out",
                "traces/bench/truncated.parquet",
                "--metrics",
                "m/truncate.json",
            ],
            "answer-only": [
                "answer-only",
                *common,
                "--raw",
                "traces/bench/raw.parquet",
                "--out",
                "traces/bench/answer-only.parquet",
                "--metrics",
                "m/answer_only.json",
            ],
            "build": [
                "build",
                *common,
                "--traces-dir",
                "traces/bench",
                "--judgements-dir",
                "judgements/bench",
                "--out-dir",
                "hub/bench",
                "--metrics",
                "m/build.json",
            ],
        }
        results = {}
        for name, args in stages.items():
            wall, rss, _ = timed_stage(args, root)
            m = json.loads((root / "m" / f"{name.replace('-', '_')}.json").read_text())
            rows = m["rows_in"]
            row = {
                "wall_s": round(wall, 2),
                "rows": rows,
                "rows_per_s": round(rows / wall, 1),
                "peak_rss_gb": round(rss, 3),
                "target_s": TARGETS_S[name] * a.scale,
                "within_target": wall <= TARGETS_S[name] * a.scale and rss <= RSS_TARGET_GB,
            }
            if name == "truncate":
                row |= {
                    "corpus_tokens_per_s": round(corpus["raw_tokens_est"] / wall),
                    "tokenized_tokens": m["tokenized_tokens"],
                    "tokenized_tokens_per_s": round(m["tokenized_tokens"] / wall),
                    "tokenized_fraction_of_corpus": round(
                        m["tokenized_tokens"] / corpus["raw_tokens_est"], 4
                    ),
                }
            if name == "build":
                row |= {
                    "bytes_written": sum(c["download_size"] for c in m["configs"].values()),
                    "rows_written": m["rows_out"],
                }
            results[name] = row
            print(
                f"{name:>12}: {wall:7.1f} s (target {TARGETS_S[name] * a.scale:6.1f} s at this scale)  "
                f"{rows / wall:>10,.0f} rows/s  peak RSS {rss:5.2f} GB"
                + (
                    f"  {corpus['raw_tokens_est'] / wall / 1e6:.2f} M corpus tok/s, "
                    f"{m['tokenized_tokens'] / wall / 1e6:.2f} M tokenised tok/s"
                    if name == "truncate"
                    else ""
                ),
                flush=True,
            )
        check = check_cuts(root, a.check_rows, a.seed)
        print(
            f"truncate exactness: {check['mismatches']} of {check['rows']} sampled rows differ from a "
            f"full-tokenisation cut; on those rows full tokenisation {check['full_tokenisation_s']:.2f} s vs "
            f"prefix cutter {check['prefix_cutter_s']:.2f} s ({check['speedup']:.1f}x)"
        )
        ratio = results["truncate"]["wall_s"] / results["answer-only"]["wall_s"]
        print(
            f"ratios: truncate/answer-only {ratio:.1f}x, build/answer-only "
            f"{results['build']['wall_s'] / results['answer-only']['wall_s']:.1f}x; truncate tokenised "
            f"{results['truncate']['tokenized_fraction_of_corpus']:.1%} of the corpus tokens"
        )
        report = {
            "scale": a.scale,
            "corpus": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in corpus.items()},
            "corpus_write_s": round(gen_s, 1),
            "stages": results,
            "truncate_exact_check": check,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "rss_target_gb": RSS_TARGET_GB,
        }
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {a.out}")
    finally:
        if a.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
