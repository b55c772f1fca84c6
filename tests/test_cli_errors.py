"""The CLI error policy, one subprocess per failure class: exit code 2, exactly one line on stderr that says
what is wrong, where (file, column, option, params key) and how to fix it, and no traceback (unless --debug).

Each case runs the real ``compress-distill`` entry point (``python -m compress_distill.cli``) the way DVC
does, on real files: a params file, Parquet written by pyarrow, a model folder, a loopback HTTP server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from compress_distill.schema import QUESTIONS, write_rows
from tests.helpers.echo_server import echo_server, fake_token

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" bar is not an error line
        **(env or {}),
    }
    full_env.pop("COMPRESS_DISTILL_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "compress_distill.cli", *args],
        check=False,
        cwd=cwd,
        env={k: v for k, v in full_env.items() if v is not None},
        capture_output=True,
        text=True,
        timeout=600,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The single stderr line of an expected failure, checked for exit code 2 and the given fragments."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error: ")
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def write_params(tmp: Path, **overrides: object) -> Path:
    """The demo params with absolute prompt paths and dotted-key ``overrides``."""
    data = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    data["generate"]["prompt"] = str(REPO / data["generate"]["prompt"])
    data["compress"]["prompt"] = str(REPO / data["compress"]["prompt"])
    data["compress"]["prompts"] = {k: str(REPO / v) for k, v in data["compress"]["prompts"].items()}
    data["judge"]["prompt"] = str(REPO / data["judge"]["prompt"])
    for dotted, value in overrides.items():
        node = data
        *path, last = dotted.split(".")
        for key in path:
            node = node[key]
        node[last] = value
    out = tmp / "params.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def questions(path: Path, n: int = 2) -> Path:
    rows = [
        {
            "id": f"demo/train/{i}",
            "dataset": "demo",
            "domain": "math",
            "group": "Math",
            "split": "train",
            "question": f"What is {i} + {i}?",
            "choices": [],
            "answer": str(2 * i),
            "answer_type": "numeric",
        }
        for i in range(n)
    ]
    write_rows(rows, path, QUESTIONS)
    return path


def generate(tmp: Path, params: Path, qs: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli(
        *extra,
        "generate",
        "--params",
        str(params),
        "--teacher",
        "smol",
        "--questions",
        str(qs),
        "--out-dir",
        str(tmp / "out"),
        "--metrics",
        str(tmp / "m.json"),
        cwd=tmp,
    )


# --------------------------------------------------------------------------------------------- params
def test_bad_params_names_the_key_and_the_choices(tmp_path: Path) -> None:
    params = write_params(tmp_path, **{"teachers.smol.device": "gpu"})
    line = one_line_error(
        generate(tmp_path, params, questions(tmp_path / "q.parquet")),
        "teachers.smol.device",
        str(params),
        "'cpu', 'cuda' or 'auto'",
        "'gpu'",
    )
    assert "--teacher" not in line  # "smol" is in the key path, not a file option


def test_debug_shows_the_traceback_and_still_exits_2(tmp_path: Path) -> None:
    params = write_params(tmp_path, **{"teachers.smol.device": "gpu"})
    proc = generate(tmp_path, params, questions(tmp_path / "q.parquet"), "--debug")
    assert proc.returncode == 2 and "Traceback" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: invalid params")


def test_missing_params_file(tmp_path: Path) -> None:
    one_line_error(
        cli(
            "plan",
            "--params",
            str(tmp_path / "nope.yaml"),
            "--out",
            str(tmp_path / "plan.yaml"),
            cwd=tmp_path,
        ),
        "nope.yaml",
        "not found",
        "--params",
    )


# --------------------------------------------------------------------------------------------- inputs
def test_missing_input_file(tmp_path: Path) -> None:
    one_line_error(
        generate(tmp_path, write_params(tmp_path), tmp_path / "missing.parquet"),
        "missing.parquet",
        "does not exist",
        "option --questions",
        "dvc repro",
    )


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_or_truncated_parquet(tmp_path: Path, damage: str) -> None:
    qs = questions(tmp_path / "q.parquet")
    data = qs.read_bytes()
    qs.write_bytes(b"not a parquet file" * 8 if damage == "garbage" else data[: len(data) // 2])
    one_line_error(
        generate(tmp_path, write_params(tmp_path), qs),
        str(qs),
        "option --questions",
        "corrupt or truncated",
        "dvc repro",
    )


def test_mistyped_input_column(tmp_path: Path) -> None:
    qs = questions(tmp_path / "q.parquet")
    table = pq.read_table(qs)
    bad = table.set_column(
        table.schema.get_field_index("question"), "question", pa.array([[1, 2], [3]], pa.list_(pa.int64()))
    )
    pq.write_table(bad, qs)
    one_line_error(
        generate(tmp_path, write_params(tmp_path), qs), str(qs), "'question'", "expected string", "dvc repro"
    )


def test_non_utf8_id(tmp_path: Path) -> None:
    qs = questions(tmp_path / "q.parquet")
    table = pq.read_table(qs)
    ids = pa.array([b"demo/train/0", b"demo/\xff\xfe/1"], pa.binary()).view(pa.string())  # bytes, unchecked
    pq.write_table(table.set_column(0, "id", ids), qs)
    one_line_error(
        generate(tmp_path, write_params(tmp_path), qs),
        str(qs),
        "option --questions",
        "column 'id'",
        "not valid UTF-8",
        "re-encode",
    )


# --------------------------------------------------------------------------------------------- models
@pytest.mark.slow
def test_missing_model_directory(tmp_path: Path) -> None:
    missing = str(tmp_path / "models" / "no-such-model")
    params = write_params(tmp_path, **{"teachers.smol.model": missing})
    one_line_error(
        generate(tmp_path, params, questions(tmp_path / "q.parquet")),
        "no-such-model",
        "does not exist",
        "teachers.smol.model",
        "fix the path",
    )


@pytest.mark.slow
def test_broken_chat_template(tmp_path: Path, smol_dir: str) -> None:
    """A model folder whose chat template (``chat_template.jinja``) Jinja cannot parse."""
    model = tmp_path / "model"
    model.mkdir()
    for f in Path(smol_dir).iterdir():
        if f.name != "chat_template.jinja":
            (model / f.name).symlink_to(f)
    (model / "chat_template.jinja").write_text("{% for m in messages %}\n{{ m['content'] }", encoding="utf-8")
    params = write_params(tmp_path, **{"teachers.smol.model": str(model)})
    one_line_error(
        generate(tmp_path, params, questions(tmp_path / "q.parquet")),
        "template",
        "line 2",
        "fix the template",
    )


# --------------------------------------------------------------------------------------------- network
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pull(tmp: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return cli(
        "pull",
        "--repo-id",
        "my-org/traces",
        "--revision",
        "v1",
        "--out-dir",
        str(tmp / "hub" / "smol"),
        "--metrics",
        str(tmp / "m.json"),
        cwd=tmp,
        env=env,
    )


def test_llm_endpoint_unreachable(tmp_path: Path) -> None:
    """An openai-backend teacher whose endpoint refuses connections: the failed requests are named, the
    finished ones cached, and the fix is to re-run."""
    params = write_params(
        tmp_path,
        **{
            "teachers.smol.backend": "openai",
            "teachers.smol.base_urls": [f"http://127.0.0.1:{_closed_port()}/v1"],
            "teachers.smol.max_retries": 0,
        },
    )
    one_line_error(
        generate(tmp_path, params, questions(tmp_path / "q.parquet")),
        "request(s) failed",
        "connection problem with http://127.0.0.1:",
        "re-run",
    )


def test_hub_unreachable(tmp_path: Path) -> None:
    env = {
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
        "HF_HOME": str(tmp_path),
    }
    one_line_error(pull(tmp_path, env), "my-org/traces", "'v1'", "HF_ENDPOINT", "traces.repo_ids")
    assert not (tmp_path / "hub").exists()


def test_hub_offline_mode(tmp_path: Path) -> None:
    one_line_error(
        pull(tmp_path, {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}), "my-org/traces", "HF_HUB_OFFLINE"
    )


def test_hub_error_echoing_the_token_is_redacted(tmp_path: Path) -> None:
    token = fake_token()
    with echo_server(401) as url:
        proc = pull(
            tmp_path, {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": url, "HF_TOKEN": token, "HF_HOME": str(tmp_path)}
        )
    line = one_line_error(proc, "my-org/traces", "401")
    assert token not in proc.stderr + proc.stdout and "tokenThatMustNeverBePrinted" not in line


# --------------------------------------------------------------------------------------------- bugs
def test_an_unexpected_error_keeps_its_traceback(tmp_path: Path) -> None:
    """A bug is not an expected failure: Python's traceback (redacted) and exit code 1, as without the policy."""
    code = (
        "from compress_distill.errors import guard\n"
        "def bug(): raise RuntimeError('server said: ' + 'hf_' + 'FAKEtoken0123456789')\n"
        "guard(bug)()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "in bug" in proc.stderr
    assert "RuntimeError: server said: hf_***" in proc.stderr and "FAKEtoken" not in proc.stderr


def test_profile_errors(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "broken.yaml").write_text("prepare: [", encoding="utf-8")
    one_line_error(
        cli("profile", "x", "--params", str(tmp_path / "p.yaml"), cwd=tmp_path),
        "no profile configs/x.yaml",
        "available: broken",
    )
    one_line_error(
        cli("profile", "broken", "--params", str(tmp_path / "p.yaml"), cwd=tmp_path),
        "configs/broken.yaml is not valid YAML",
    )
