"""Schemas round-trip through Parquet; reads name missing/mistyped columns; writes are atomic."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from compress_distill import schema as S


def _row(schema: pa.Schema) -> dict:
    samples = {
        pa.string(): "x",
        pa.int8(): 3,
        pa.int32(): 1,
        pa.int64(): 7,
        pa.float64(): 0.25,
        pa.bool_(): True,
        pa.list_(pa.string()): ["a", "b"],
    }
    return {f.name: samples[f.type] for f in schema}


@pytest.mark.parametrize("name", sorted(S.TABLES))
def test_round_trip(name: str, tmp_path: Path) -> None:
    schema = S.TABLES[name]
    rows = [_row(schema), {**_row(schema), schema.names[0]: "é ünïcode ✓"}]
    path = S.write_rows(rows, tmp_path / f"{name}.parquet", schema)
    back = S.read_rows(path, schema)
    assert back == rows
    assert pq.read_schema(path).names == schema.names


def test_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "q.parquet"
    table = S.to_table([_row(S.QUESTIONS)], S.QUESTIONS).drop_columns(["answer_type"])
    pq.write_table(table, path)
    with pytest.raises(S.SchemaError, match=r"missing column\(s\) \['answer_type'\]"):
        S.read_table(path, S.QUESTIONS)


def test_mistyped_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "p.parquet"
    row = _row(S.PREDICTIONS)
    table = S.to_table([row], S.PREDICTIONS)
    table = table.set_column(table.column_names.index("correct"), "correct", pa.array([["no"]]))
    pq.write_table(table, path)
    with pytest.raises(S.SchemaError, match="column 'correct' has type"):
        S.read_table(path, S.PREDICTIONS)


def test_same_type_in_another_encoding_is_accepted(tmp_path: Path) -> None:
    """An integer width or a large_string (polars, pandas) is storage, not a different type."""
    path = tmp_path / "a.parquet"
    table = S.to_table([_row(S.ATTEMPTS)], S.ATTEMPTS)
    table = table.set_column(table.column_names.index("round"), "round", pa.array([2], pa.int64()))
    table = table.set_column(
        table.column_names.index("teacher"), "teacher", pa.array(["t"], pa.large_string())
    )
    table = table.set_column(
        table.column_names.index("finish_reason"), "finish_reason", pa.array(["stop"]).dictionary_encode()
    )
    pq.write_table(table, path)
    back = S.read_table(path, S.ATTEMPTS)
    assert back.schema == S.ATTEMPTS and back.column("teacher").to_pylist() == ["t"]
    big = table.set_column(table.column_names.index("round"), "round", pa.array([2**40], pa.int64()))
    pq.write_table(big, path)
    with pytest.raises(
        S.SchemaError, match="'round' has type int64, expected int32, and its values do not fit"
    ):
        S.read_table(path, S.ATTEMPTS)


@pytest.mark.parametrize(
    ("table", "column", "values"),
    [
        ("questions", "question", pa.array([0], pa.int64())),  # was cast to "0" and sent to the teacher
        ("questions", "id", pa.array([7], pa.int64())),  # was rewritten to "7"
        ("judgements", "faithfulness", pa.array([True])),  # was stored as 1
        ("judgements", "answer_alignment", pa.array(["yes"])),
        ("traces", "reasoning_tokens", pa.array([1.5])),
        ("traces", "answer_preserved", pa.array([1], pa.int8())),
    ],
)
def test_a_wrong_column_type_is_an_error_never_a_cast(
    tmp_path: Path, table: str, column: str, values: pa.Array
) -> None:
    schema = S.TABLES[table]
    path = tmp_path / f"{table}.parquet"
    t = S.to_table([_row(schema)], schema)
    pq.write_table(t.set_column(t.column_names.index(column), column, values), path)
    with pytest.raises(S.SchemaError) as err:
        S.read_table(path, schema)
    msg = str(err.value)
    assert msg.startswith(
        f"{path}: column {column!r} has type {values.type}, expected {schema.field(column).type}"
    )
    assert "dvc repro" in msg and "never casts" in msg
    with pytest.raises(S.SchemaError, match=f"column {column!r}"):  # streamed reads too
        next(S.iter_batches(path, schema))


def test_first_per_id_keeps_the_first_row_across_batches() -> None:
    seen: set[str] = set()
    assert S.first_per_id(["a", "b", "a"], seen) == [True, True, False]
    assert S.first_per_id(["b", "c", "c", None, ""], seen) == [False, True, False, True, False]


def test_rejects_path_is_beside_the_output() -> None:
    assert S.rejects_path("data/traces/T/raw.parquet") == Path("data/traces/T/raw.rejects.parquet")
    assert S.rejects_path("data/hub/T") == Path("data/hub/T.rejects.parquet")


def test_extra_row_keys_rejected() -> None:
    with pytest.raises(S.SchemaError, match="not in the schema"):
        S.to_table([{**_row(S.REJECTS), "bogus": 1}], S.REJECTS)


def test_streamed_batches(tmp_path: Path) -> None:
    rows = [{**_row(S.REJECTS), "id": str(i)} for i in range(10)]
    batches = (S.to_table(rows[i : i + 3], S.REJECTS) for i in range(0, 10, 3))
    assert S.write_batches(batches, tmp_path / "r.parquet", S.REJECTS) == 10
    got = [
        r["id"]
        for b in S.iter_batches(tmp_path / "r.parquet", S.REJECTS, batch_size=4)
        for r in b.to_pylist()
    ]
    assert got == [str(i) for i in range(10)]


def test_failed_write_leaves_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    S.write_rows([_row(S.REJECTS)], path, S.REJECTS)
    before = path.read_bytes()

    def boom():
        yield S.to_table([_row(S.REJECTS)], S.REJECTS)
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        S.write_batches(boom(), path, S.REJECTS)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temp file left behind
    assert not any(tmp_path.parent.joinpath(".staging").glob("*"))  # nor a staging folder


def test_sigkill_mid_write_never_tears_the_file(tmp_path: Path) -> None:
    """A writer SIGKILLed while streaming leaves the old file intact and no stray file beside it."""
    path = tmp_path / "big.parquet"
    S.write_rows([_row(S.REJECTS)], path, S.REJECTS)
    code = f"""
import sys, time
sys.path.insert(0, {str(Path(S.__file__).parents[1])!r})
from compress_distill import schema as S
def gen():
    while True:
        yield S.to_table([{{"id": "x" * 1000, "stage": "s", "reason": "r", "detail": "d"}}] * 1000, S.REJECTS)
        print("batch", flush=True)
S.write_batches(gen(), {str(path)!r}, S.REJECTS)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for _ in range(5):
        proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert S.read_rows(path, S.REJECTS) == [_row(S.REJECTS)]
    assert [p.name for p in tmp_path.iterdir()] == ["big.parquet"]


def test_judge_schema_matches_table() -> None:
    js = S.judge_json_schema()
    assert set(js["required"]) == {
        "faithfulness",
        "coverage",
        "clarity",
        "verdict",
        "answer_alignment",
        "failure_modes",
        "rationale",
    }
    table_cols = set(S.JUDGEMENTS.names) - {"id", "compressor", "judge_model", "parse_status"}
    assert table_cols == set(js["properties"])
    v = S.JudgeVerdict.model_validate_json(
        '{"faithfulness":5,"coverage":4,"clarity":5,"verdict":"faithful","answer_alignment":true,'
        '"failure_modes":[],"rationale":"ok"}'
    )
    assert v.verdict == "faithful"


@pytest.mark.skipif(
    shutil.which("dvc") is None and not (Path(sys.executable).parent / "dvc").exists(),
    reason="dvc is not installed",
)
def test_sigkill_mid_write_leaves_dvc_status_unchanged(tmp_path: Path) -> None:
    """A killed writer left ``.t.parquet.*.tmp`` inside ``d/``, a folder another stage depends on, so
    ``dvc status`` reported that stage as changed."""
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    env = {**os.environ, "PYTHONPATH": str(Path(S.__file__).parents[1])}
    write = textwrap.dedent("""
        import sys
        from compress_distill import schema as S
        def gen():
            for i in range(10**6 if sys.argv[1] == "forever" else 1):
                yield S.to_table([{"id": "x" * 1000, "stage": "s", "reason": "r", "detail": str(i)}] * 500, S.REJECTS)
                print("batch", flush=True)
        S.write_batches(gen(), "d/t.parquet", S.REJECTS)
    """)
    (tmp_path / "write.py").write_text(write)
    (tmp_path / "dvc.yaml").write_text(
        textwrap.dedent(f"""
        stages:
          make:
            cmd: {sys.executable} write.py once
            deps: [write.py]
            outs: [d/t.parquet]
          use:
            cmd: ls d > listing.txt
            deps: [d]
            outs: [listing.txt]
    """)
    )

    def run(*args: str) -> str:
        done = subprocess.run(
            [dvc, *args], check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run("init", "--no-scm", "-q")
    run("repro", "-q")
    assert "up to date" in run("status")
    proc = subprocess.Popen(
        [sys.executable, "write.py", "forever"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    for _ in range(3):
        proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert "up to date" in run("status")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["t.parquet"]
