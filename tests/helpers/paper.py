"""The paper's printed numbers (its Tables 3, 9 and 11), kept as a regression fixture.

Kept verbatim, rounding included; the tests push them through the project's metric and table code
(tests/evaluation/test_paper_fixture.py, test_aggregate.py).  Teacher, student, method and source ids are
the params ids of ``configs/paper.yaml``'s grid shape: teachers ``qwen`` (Qwen3.5-397B) and ``gptoss``
(gpt-oss-120B); students ``q08`` (Qwen3.5-0.8B), ``l8`` (Llama-3.1-8B), ``q9`` (Qwen3.5-9B), ``g20``
(gpt-oss-20B); compressors ``l70`` (Llama-3.3-70B) and ``m14`` (Ministral-3-14B).
"""

from __future__ import annotations

from compress_distill.evaluation.tables import RunResult

TEACHERS = ["qwen", "gptoss"]
STUDENTS = ["q08", "l8", "q9", "g20"]
METHODS = ["lora", "full"]
SOURCES = ["raw", "answer-only", "truncated", "compressed-l70", "compressed-m14"]

# Table 3: (teacher, student, method) -> overall accuracy of raw, Llama-70B-, Ministral-14B-compressed
TABLE3 = {
    ("qwen", "q08", "lora"): ("0.528", "0.506", "0.500"),
    ("qwen", "q08", "full"): ("0.532", "0.481", "0.500"),
    ("qwen", "l8", "lora"): ("0.657", "0.620", "0.621"),
    ("qwen", "l8", "full"): ("0.715", "0.665", "0.652"),
    ("qwen", "q9", "lora"): ("0.862", "0.830", "0.815"),
    ("qwen", "q9", "full"): ("0.866", "0.834", "0.817"),
    ("qwen", "g20", "full"): ("0.815", "0.769", "0.754"),
    ("gptoss", "q08", "lora"): ("0.569", "0.510", "0.507"),
    ("gptoss", "q08", "full"): ("0.577", "0.519", "0.516"),
    ("gptoss", "l8", "lora"): ("0.704", "0.631", "0.628"),
    ("gptoss", "l8", "full"): ("0.754", "0.669", "0.671"),
    ("gptoss", "q9", "lora"): ("0.866", "0.829", "0.816"),
    ("gptoss", "q9", "full"): ("0.866", "0.830", "0.817"),
    ("gptoss", "g20", "full"): ("0.844", "0.776", "0.767"),
}

# Table 9, every row in the paper's order: (teacher, student, source, method, overall accuracy (Table 7's
# Overall column), avg. completion tokens (all records), printed acc / 1k tokens)
TABLE9 = [
    ("qwen", "q08", "raw", "lora", 0.528, 2954, 0.1786),
    ("qwen", "q08", "raw", "full", 0.532, 2813, 0.1893),
    ("qwen", "q08", "answer-only", "lora", 0.390, 4, 93.1334),
    ("qwen", "q08", "answer-only", "full", 0.001, 8189, 0.0001),
    ("qwen", "q08", "truncated", "lora", 0.479, 321, 1.4943),
    ("qwen", "q08", "truncated", "full", 0.487, 278, 1.7537),
    ("qwen", "q08", "compressed-l70", "lora", 0.506, 234, 2.1647),
    ("qwen", "q08", "compressed-l70", "full", 0.481, 2097, 0.2293),
    ("qwen", "q08", "compressed-m14", "lora", 0.500, 179, 2.7865),
    ("qwen", "q08", "compressed-m14", "full", 0.500, 178, 2.8027),
    ("qwen", "l8", "raw", "lora", 0.657, 3528, 0.1861),
    ("qwen", "l8", "raw", "full", 0.715, 2622, 0.2727),
    ("qwen", "l8", "answer-only", "lora", 0.590, 2, 293.3698),
    ("qwen", "l8", "answer-only", "full", 0.181, 2, 90.4606),
    ("qwen", "l8", "truncated", "lora", 0.417, 1328, 0.3142),
    ("qwen", "l8", "truncated", "full", 0.596, 184, 3.2319),
    ("qwen", "l8", "compressed-l70", "lora", 0.620, 233, 2.6613),
    ("qwen", "l8", "compressed-l70", "full", 0.665, 232, 2.8686),
    ("qwen", "l8", "compressed-m14", "lora", 0.621, 180, 3.4487),
    ("qwen", "l8", "compressed-m14", "full", 0.652, 166, 3.9282),
    ("qwen", "q9", "raw", "lora", 0.862, 1827, 0.4717),
    ("qwen", "q9", "raw", "full", 0.866, 1814, 0.4775),
    ("qwen", "q9", "answer-only", "lora", 0.781, 4, 192.7208),
    ("qwen", "q9", "answer-only", "full", 0.550, 8188, 0.0672),
    ("qwen", "q9", "truncated", "lora", 0.826, 483, 1.7106),
    ("qwen", "q9", "truncated", "full", 0.830, 370, 2.2436),
    ("qwen", "q9", "compressed-l70", "lora", 0.830, 223, 3.7142),
    ("qwen", "q9", "compressed-l70", "full", 0.834, 223, 3.7377),
    ("qwen", "q9", "compressed-m14", "lora", 0.815, 168, 4.8637),
    ("qwen", "q9", "compressed-m14", "full", 0.817, 232, 3.5236),
    ("qwen", "g20", "raw", "full", 0.815, 2261, 0.3606),
    ("qwen", "g20", "truncated", "full", 0.769, 319, 2.4101),
    ("qwen", "g20", "compressed-l70", "full", 0.769, 323, 2.3798),
    ("qwen", "g20", "compressed-m14", "full", 0.754, 468, 1.6104),
    ("gptoss", "q08", "raw", "lora", 0.569, 1394, 0.4083),
    ("gptoss", "q08", "raw", "full", 0.577, 1428, 0.4043),
    ("gptoss", "q08", "compressed-l70", "lora", 0.510, 220, 2.3182),
    ("gptoss", "q08", "compressed-l70", "full", 0.519, 292, 1.7781),
    ("gptoss", "q08", "compressed-m14", "lora", 0.507, 166, 3.0491),
    ("gptoss", "q08", "compressed-m14", "full", 0.516, 170, 3.0321),
    ("gptoss", "l8", "raw", "lora", 0.704, 1586, 0.4442),
    ("gptoss", "l8", "raw", "full", 0.754, 1237, 0.6096),
    ("gptoss", "l8", "compressed-l70", "lora", 0.631, 199, 3.1629),
    ("gptoss", "l8", "compressed-l70", "full", 0.669, 193, 3.4656),
    ("gptoss", "l8", "compressed-m14", "lora", 0.628, 169, 3.7270),
    ("gptoss", "l8", "compressed-m14", "full", 0.671, 151, 4.4296),
    ("gptoss", "q9", "raw", "lora", 0.866, 959, 0.9032),
    ("gptoss", "q9", "raw", "full", 0.866, 924, 0.9372),
    ("gptoss", "q9", "compressed-l70", "lora", 0.829, 194, 4.2715),
    ("gptoss", "q9", "compressed-l70", "full", 0.830, 192, 4.3169),
    ("gptoss", "q9", "compressed-m14", "lora", 0.816, 153, 5.3482),
    ("gptoss", "q9", "compressed-m14", "full", 0.817, 183, 4.4642),
    ("gptoss", "g20", "raw", "full", 0.844, 958, 0.8802),
    ("gptoss", "g20", "compressed-l70", "full", 0.776, 253, 3.0720),
    ("gptoss", "g20", "compressed-m14", "full", 0.767, 416, 1.8454),
]  # fmt: skip

# Table 11: (source, GPUs, GPU-h) per training run in the paper's row order (compressed sources by compressor)
TABLE11 = [("raw", 4, 4.5), ("answer-only", 4, 0.3), ("truncated", 4, 0.6), ("l70", 4, 0.8), ("m14", 4, 0.6), ("raw", 4, 4.2), ("answer-only", 4, 0.3), ("truncated", 4, 0.6), ("l70", 4, 0.7), ("m14", 4, 0.6), ("raw", 8, 21.8), ("answer-only", 8, 0.8), ("truncated", 8, 2.3), ("l70", 4, 3.1), ("m14", 4, 2.3), ("raw", 8, 24.4), ("answer-only", 8, 1.0), ("truncated", 8, 2.7), ("l70", 4, 3.4), ("m14", 4, 2.5), ("raw", 8, 21.6), ("answer-only", 8, 1.0), ("truncated", 8, 2.6), ("l70", 4, 3.3), ("m14", 4, 2.5), ("raw", 8, 26.7), ("answer-only", 8, 1.4), ("truncated", 8, 3.3), ("l70", 4, 4.1), ("m14", 4, 3.0), ("raw", 8, 25.0), ("truncated", 8, 3.9), ("l70", 8, 4.9), ("m14", 8, 4.0), ("raw", 4, 2.3), ("l70", 4, 0.6), ("m14", 4, 0.6), ("raw", 4, 2.2), ("l70", 4, 0.6), ("m14", 4, 0.6), ("raw", 8, 11.0), ("l70", 4, 2.5), ("m14", 4, 2.1), ("raw", 8, 12.4), ("l70", 4, 2.7), ("m14", 4, 2.3), ("raw", 8, 10.8), ("l70", 4, 2.7), ("m14", 4, 2.3), ("raw", 8, 13.3), ("l70", 4, 3.3), ("m14", 4, 2.9), ("raw", 8, 13.1), ("l70", 8, 4.1), ("m14", 8, 3.7)]  # fmt: skip


def table11_runs() -> list[RunResult]:
    """Table 11's 55 training runs as report rows: source, GPUs and GPU-hours (wall clock = GPU-h / GPUs)."""
    return [
        RunResult(
            f"r{i}",
            "t",
            "s",
            "m",
            src if src in ("raw", "answer-only", "truncated") else f"compressed-{src}",
            train={"gpu_hours": gpu_h, "gpus": gpus, "wall_clock_s": gpu_h / gpus * 3600},
        )
        for i, (src, gpus, gpu_h) in enumerate(TABLE11)
    ]
