"""The stage I/O convention, stage by stage: strict input types, one row per id downstream, a rejects file
beside every output (declared in dvc.yaml), outputs and metrics committed together, row accounting."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from compress_distill.metrics import read_metrics
from compress_distill.schema import (
    JUDGEMENTS,
    QUESTIONS,
    REJECTS,
    TRACES,
    SchemaError,
    read_rows,
    rejects_path,
)
from compress_distill.stages import answer_only, build, compress, generate, judge, prepare, truncate
from compress_distill.stats import TraceStats
from tests.helpers.traces import (
    REPO,
    ScriptedBackend,
    completion,
    make_params,
    make_traces,
    prompt_of,
    question,
    trace,
    write_traces,
)

LONG = "First I add 2 and 2. " * 10 + "So 2 + 2 = 4, the answer is 4."


def accounted(m: dict) -> None:
    assert m["rows_in"] == m["rows_out"] + sum(m["rejects"].values()), m


def reject_ids(out: Path) -> dict[str, list[str]]:
    got: dict[str, list[str]] = {}
    for r in read_rows(rejects_path(out), REJECTS):
        got.setdefault(r["reason"], []).append(r["id"])
    return got


# --------------------------------------------------------------------------------------------- strict types
def test_int_question_and_id_columns_are_an_error_never_sent_to_the_teacher(tmp_path: Path) -> None:
    """An int ``question`` column was cast to "0", "1" and sent to the teacher; ids were rewritten."""
    table = pa.table(
        {
            **{
                n: pa.array([f"q{i}" for i in range(2)])
                for n in QUESTIONS.names
                if n not in ("question", "choices")
            },
            "question": pa.array([0, 1], pa.int64()),
            "choices": pa.array([[], []], pa.list_(pa.string())),
        }
    )
    path = tmp_path / "questions.parquet"
    pq.write_table(table, path)
    backend = ScriptedBackend(lambda r: completion("The answer is 4.", "r"))
    with pytest.raises(SchemaError) as err:
        generate.run(make_params(), "smol", path, tmp_path / "out", tmp_path / "m.json", backend=backend)
    msg = str(err.value)
    assert str(path) in msg and "'question'" in msg and "int64" in msg and "expected string" in msg
    assert "dvc repro" in msg  # how to fix
    assert backend.calls == [] and not (tmp_path / "out").exists() and not (tmp_path / "m.json").exists()

    ids = pa.table(
        {
            **{n: table[n] for n in QUESTIONS.names},
            "id": pa.array([7, 8]),
            "question": pa.array(["What is 2 + 2?"] * 2),
        }
    )
    pq.write_table(ids, path)
    with pytest.raises(SchemaError, match=r"column 'id' has type int64, expected string"):
        generate.run(make_params(), "smol", path, tmp_path / "out", tmp_path / "m.json", backend=backend)


def test_bool_scores_in_a_judgements_table_are_an_error(tmp_path: Path) -> None:
    traces, judgements = make_traces(tmp_path)
    t = pq.read_table(judgements / "concise.parquet")
    t = t.set_column(
        t.schema.get_field_index("faithfulness"), "faithfulness", pa.array([True] * t.num_rows, pa.bool_())
    )
    pq.write_table(t, judgements / "concise.parquet")
    with pytest.raises(SchemaError, match=r"'faithfulness' has type bool, expected int8"):
        build.run(make_params(), "smol", traces, judgements, tmp_path / "hub" / "smol", tmp_path / "m.json")


# --------------------------------------------------------------------------------------------- duplicate ids
def dup_raw(tmp_path: Path) -> Path:
    """Raw traces where ``a`` appears twice (the second with different text) and ``b`` once."""
    return write_traces(
        tmp_path / "raw.parquet",
        [
            trace("a", LONG, question="ROW-a What is 2 + 2?"),
            trace("b", LONG, question="ROW-b What is 2 + 2?"),
            trace("a", LONG + " SECOND COPY", question="ROW-a2 What is 2 + 2?"),
        ],
    )


def test_compress_sends_one_request_per_id(tmp_path: Path) -> None:
    raw = dup_raw(tmp_path)
    backend = ScriptedBackend(lambda r: completion("2 + 2 = 4. The answer is 4."))
    out = tmp_path / "c.parquet"
    m = compress.run(
        make_params(), "smol", "concise", raw, out, tmp_path / "m.json", backend=backend, chunk_rows=2
    )
    assert [r["id"] for r in read_rows(out, TRACES)] == ["a", "b"]
    assert not any("ROW-a2" in prompt_of(r) for c in backend.calls for r in c)
    assert m["rejects"] == {"duplicate_id": 1} and reject_ids(out) == {"duplicate_id": ["a"]}
    accounted(m)


def test_truncate_cuts_one_row_per_id(tmp_path: Path) -> None:
    """Both copies of an id were cut with one budget and passed on."""
    raw = dup_raw(tmp_path)
    comp = write_traces(
        tmp_path / "comp.parquet",
        [
            trace("a", "x", tokens=5, source="compressed-terse"),
            trace("b", "y", tokens=3, source="compressed-terse"),
            trace(
                "b", "y", tokens=99, source="compressed-terse"
            ),  # a repeated budget row: the first one counts
        ],
    )
    out = tmp_path / "t.parquet"
    m = truncate.run(make_params(), "smol", raw, comp, out, tmp_path / "m.json", batch_rows=2)
    rows = read_rows(out, TRACES)
    assert [r["id"] for r in rows] == ["a", "b"] and [r["reasoning_tokens"] for r in rows] == [5, 3]
    assert m["rejects"] == {"duplicate_id": 1} and m["compressed_repeated_ids"] == 1
    assert reject_ids(out) == {"duplicate_id": ["a"]}
    accounted(m)


def test_answer_only_keeps_the_first_row_per_id(tmp_path: Path) -> None:
    raw = dup_raw(tmp_path)
    out = tmp_path / "ao.parquet"
    m = answer_only.run(make_params(), "smol", raw, out, tmp_path / "m.json", batch_rows=2)
    rows = read_rows(out, TRACES)
    assert [r["id"] for r in rows] == ["a", "b"] and rows[0]["question"] == "ROW-a What is 2 + 2?"
    assert m["rejects"] == {"duplicate_id": 1} and reject_ids(out) == {"duplicate_id": ["a"]}
    accounted(m)


def test_judge_on_duplicate_raw_ids_judges_each_compressed_row_once(tmp_path: Path) -> None:
    """Duplicate raw ids made judge write two rows for one id, then crash in row accounting."""
    raw = dup_raw(tmp_path)
    comp = write_traces(
        tmp_path / "comp.parquet",
        [
            trace("a", "short a", source="compressed-concise"),
            trace("b", "short b", source="compressed-concise"),
            trace("b", "short b again", source="compressed-concise"),
        ],
    )
    reply = (
        '{"faithfulness": 5, "coverage": 4, "clarity": 5, "verdict": "faithful", "answer_alignment": true,'
        ' "failure_modes": [], "rationale": "ok"}'
    )
    backend = ScriptedBackend(lambda r: completion(reply))
    out = tmp_path / "j.parquet"
    m = judge.run(
        make_params(), "smol", "concise", raw, comp, out, tmp_path / "m.json", backend=backend, chunk_rows=4
    )
    assert sorted(r["id"] for r in read_rows(out, JUDGEMENTS)) == ["a", "b"]
    assert not any("SECOND COPY" in prompt_of(r) for c in backend.calls for r in c)
    assert m["rejects"] == {"duplicate_id": 1} and m["raw_repeated_ids"] == 1
    accounted(m)


def test_build_publishes_one_row_per_id(tmp_path: Path) -> None:
    traces, judgements = make_traces(tmp_path)
    raw = read_rows(traces / "raw.parquet", TRACES)
    write_traces(traces / "raw.parquet", [*raw, {**raw[0], "reasoning": "a second copy"}])
    folder = tmp_path / "hub" / "smol"
    m = build.run(make_params(), "smol", traces, judgements, folder, tmp_path / "m.json")
    published = pq.read_table(folder / "raw").column("id").to_pylist()
    assert sorted(published) == sorted(r["id"] for r in raw)
    assert m["configs"]["raw"]["rows"] == len(raw)
    assert m["rejects"] == {"duplicate_id": 1} and reject_ids(folder) == {"duplicate_id": [raw[0]["id"]]}
    assert rejects_path(folder) == tmp_path / "hub" / "smol.rejects.parquet"  # beside, never published
    accounted(m)


def test_prepare_drops_repeated_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from compress_distill.benchmarks import registry

    rows = [
        {**question("d/train/0", "What is 2 + 2?", "4"), "split": "train"},
        {**question("d/train/0", "What is 3 + 3?", "6"), "split": "train"},
        {**question("d/eval/0", "What is 5 + 5?", "10"), "split": "eval"},
    ]
    loaded = SimpleNamespace(rows_in=3, rejects={}, rejected=[], rows=rows)  # registry.load's result, faked
    monkeypatch.setattr(registry, "load", lambda *a, **k: loaded)
    p = make_params(**{"prepare.datasets": ["demo"]})
    m = prepare.run(p, tmp_path / "questions", tmp_path / "m.json")
    assert [r["id"] for r in read_rows(tmp_path / "questions" / "train.parquet", QUESTIONS)] == ["d/train/0"]
    assert m["rejects"]["duplicate_id"] == 1
    assert reject_ids(tmp_path / "questions") == {"duplicate_id": ["d/train/0"]}  # written without --rejects
    accounted(m)


# --------------------------------------------------------------------------------------------- rejects files
def test_every_stage_writes_its_rejects_file_even_when_empty(tmp_path: Path) -> None:
    raw = write_traces(tmp_path / "raw.parquet", [trace("a", LONG)])
    out = tmp_path / "ao.parquet"
    answer_only.run(make_params(), "smol", raw, out, tmp_path / "m.json")
    assert rejects_path(out).exists() and read_rows(rejects_path(out), REJECTS) == []


def test_dvc_yaml_declares_a_rejects_file_beside_every_output() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    missing = []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        outs = [o if isinstance(o, str) else next(iter(o)) for o in body.get("outs", [])]
        products = [o for o in outs if not o.endswith(".rejects.parquet") and not o.startswith("plots/")]
        if name == "prepare":  # two tables of one folder: one rejects file for the folder
            products = ["data/questions"]
        if name in (
            "generate",
            "ift",
        ):  # (ift.)attempts.parquet logs every attempt (nothing is rejected from it)
            products = [o for o in products if not o.endswith("attempts.parquet")]
        if name == "verify":  # the decisions table logs every decision, as attempts.parquet every attempt
            products = [o for o in products if not o.endswith(".decisions.parquet")]
        if name == "train":  # training.data counts its rejects per reason in the metrics (rows carry no id)
            products = []
        if name == "evaluate":  # results/RUN.json(l) re-express the predictions in lm-eval's layout
            products = [o for o in products if not o.startswith("results/")]
        for o in products:
            if str(rejects_path(o)) not in outs:
                missing.append(f"{name}: {rejects_path(o)}")
    assert missing == []


# --------------------------------------------------------------------------------------------- atomic commit
def test_a_crash_in_metrics_leaves_previous_outputs_and_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs used to be renamed into place before the metrics were computed."""
    out, metrics = tmp_path / "ao.parquet", tmp_path / "m.json"
    first = write_traces(tmp_path / "raw1.parquet", [trace("a", LONG)])
    answer_only.run(make_params(), "smol", first, out, metrics)
    before = {p: p.read_bytes() for p in (out, rejects_path(out), metrics)}

    second = write_traces(tmp_path / "raw2.parquet", [trace("b", LONG), trace("c", LONG, response=" ")])

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise RuntimeError("metrics failed")

    monkeypatch.setattr(TraceStats, "blocks", boom)
    with pytest.raises(RuntimeError, match="metrics failed"):
        answer_only.run(make_params(), "smol", second, out, metrics)
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["raw1.parquet", "raw2.parquet", "ao.parquet", "ao.rejects.parquet", "m.json"]
    )
    assert json.loads(metrics.read_text())["rows_in"] == 1


def test_a_failed_build_leaves_the_previous_folder(tmp_path: Path) -> None:
    traces, judgements = make_traces(tmp_path)
    folder = tmp_path / "hub" / "smol"
    build.run(make_params(), "smol", traces, judgements, folder, tmp_path / "m.json")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    metrics = (tmp_path / "m.json").read_bytes()
    write_traces(traces / "truncated.parquet", [])  # an empty source stops the build
    with pytest.raises(Exception, match="no rows"):
        build.run(make_params(), "smol", traces, judgements, folder, tmp_path / "m.json")
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert (tmp_path / "m.json").read_bytes() == metrics
    assert sorted(p.name for p in folder.parent.iterdir()) == ["smol", "smol.rejects.parquet"]
    assert read_metrics(tmp_path / "m.json")["rows_out"] == 20


def test_train_trains_on_the_first_row_per_id_and_commits_model_with_metrics(tmp_path: Path) -> None:
    """A pulled revision can repeat an id; train counts the repeat as a ``duplicate_id`` reject."""
    from compress_distill.stages import train
    from tests.helpers.traces import write_params

    source = write_traces(
        tmp_path / "hub" / "smol" / "raw" / "train-00000-of-00001.parquet",
        [trace("a", "2 plus 2 is 4."), trace("b", "3 plus 1 is 4."), trace("a", "again 2 plus 2 is 4.")],
    ).parent
    overrides = {
        "train.max_steps": 1,
        "train.seq_len": 128,
        "train.device": "cpu",
        "train.save_every_steps": 100,
    }
    params = write_params(tmp_path / "params.yaml", make_params(**overrides))
    out = tmp_path / "models" / "smol-smol-lora-raw"
    m = train.run(params, "smol-smol-lora-raw", source, out, tmp_path / "m.json")
    assert (m["rows_in"], m["rows_out"], m["rejects"]) == (3, 2, {"duplicate_id": 1})
    assert read_metrics(tmp_path / "m.json") == json.loads(json.dumps(m))
    assert (out / "training_config.json").exists()
    # the model folder was staged outside models/ (only the finished checkpoint root may remain there)
    assert {p.name for p in out.parent.iterdir()} - {".checkpoints"} == {"smol-smol-lora-raw"}


def test_a_stage_killed_mid_write_leaves_dvc_status_unchanged(tmp_path: Path) -> None:
    """SIGKILL of a real stage (``compress-distill answer-only``) while it writes: its staged file lives in
    ``.cache/staging``, so the folder another stage depends on (as build depends on ``data/traces/T``) is
    untouched and ``dvc status`` still says up to date; the next run removes the dead run's staging folder."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers.traces import write_params

    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    if not Path(dvc).exists():
        pytest.skip("dvc is not installed")
    traces = tmp_path / "data" / "traces" / "smol"
    row = trace("x", "r", response="The answer is 4.")
    table = pa.Table.from_pylist([row], schema=TRACES)
    n = 400_000  # enough rows that the stage is still writing when it is killed
    big = pa.Table.from_arrays(
        [
            pa.array([f"t{i}" for i in range(n)])
            if f.name in ("id", "question_id")
            else pa.repeat(table.column(f.name)[0], n).cast(f.type)
            for f in TRACES
        ],
        schema=TRACES,
    )
    traces.mkdir(parents=True)
    pq.write_table(big, traces / "raw.parquet")
    write_params(tmp_path / "params.yaml", make_params())
    cmd = [
        sys.executable,
        "-m",
        "compress_distill.cli",
        "answer-only",
        "--params",
        "params.yaml",
        "--teacher",
        "smol",
        "--raw",
        "data/traces/smol/raw.parquet",
        "--out",
        "data/traces/smol/answer-only.parquet",
        "--metrics",
        "metrics/ao.json",
    ]
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "ao": {
                        "cmd": " ".join(cmd),
                        "deps": ["data/traces/smol/raw.parquet"],
                        "outs": [
                            "data/traces/smol/answer-only.parquet",
                            "data/traces/smol/answer-only.rejects.parquet",
                        ],
                        "metrics": [{"metrics/ao.json": {"cache": False}}],
                    },
                    "use": {
                        "cmd": "ls data/traces/smol > listing.txt",
                        "deps": ["data/traces/smol"],
                        "outs": ["listing.txt"],
                    },
                }
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(Path(answer_only.__file__).parents[2])}

    def dvc_run(*args: str) -> str:
        done = subprocess.run(
            [dvc, *args], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    dvc_run("init", "--no-scm", "-q")
    dvc_run("repro", "-q")
    before = {p: p.read_bytes() for p in (traces / "answer-only.parquet", tmp_path / "metrics" / "ao.json")}
    staging_root = tmp_path / ".cache" / "staging"
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(staging_root.glob("*/*")) and not any(traces.glob(".*")):  # a staged (or stray) file
        assert proc.poll() is None, "the stage finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "up to date" in dvc_run("status")
    assert {p: p.read_bytes() for p in before} == before
    assert [p.name for p in staging_root.iterdir()]  # the dead run's staging folder ...
    dvc_run("repro", "-f", "-q", "ao")
    assert list(staging_root.iterdir()) == []  # ... is removed by the next run


# --------------------------------------------------------------------------------------------- file modes
def test_outputs_metrics_and_cache_follow_the_umask(tmp_path: Path) -> None:
    """Under umask 002 (a group-shared project) every file a stage writes is group-writable; the request
    cache's segments used to be created 0644, so a colleague's run could not append to the shared cache."""
    import os
    import stat

    from compress_distill.schema import umask_mode
    from tests.helpers.chat_server import chat_server
    from tests.helpers.traces import SMOL, write_questions

    questions = write_questions(tmp_path / "q.parquet", [question("demo/train/0", "What is 2 + 2?", "4")])
    out, metrics = tmp_path / "data" / "traces" / "smol", tmp_path / "metrics" / "generate" / "smol.json"
    cache = tmp_path / "cache"
    old = os.umask(0o002)
    try:
        with chat_server("2 and 2 make 4.\nThe answer is 4.") as server:
            teacher = {
                "backend": "openai",
                "model": "gpt-4o-mini",
                "tokenizer": SMOL,
                "base_urls": [server.url],
            }
            params = make_params(**{"teachers.smol": teacher, "generate.rounds": 1})
            m = generate.run(params, "smol", questions, out, metrics, cache_dir=cache)
        (tmp_path / "job.sh").touch()
        script = umask_mode(tmp_path / "job.sh", executable=True)  # as grid writes its job scripts
    finally:
        os.umask(old)
    assert m["rows_out"] == 1 and len(list(cache.rglob("*.jsonl"))) >= 1
    files = [*out.iterdir(), metrics, *cache.rglob("*.jsonl"), *tmp_path.rglob("*.lock")]
    assert sum(p.suffix == ".lock" for p in files) == 4  # attempts, raw, rejects, metrics
    assert {p.name for p in out.iterdir()} == {"attempts.parquet", "raw.parquet", "raw.rejects.parquet"}
    modes = {str(p.relative_to(tmp_path)): stat.S_IMODE(p.stat().st_mode) for p in files}
    assert {p: oct(mode) for p, mode in modes.items() if mode != 0o664} == {}
    assert stat.S_IMODE(script.stat().st_mode) == 0o775
