"""Metrics files: row accounting enforced, JSON-safe, atomic; the staging transaction that commits a
stage's outputs and metrics together; prompts render and hash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from compress_distill import staging
from compress_distill.metrics import AccountingError, RowCounter, read_metrics, write_metrics
from compress_distill.prompts import load_prompt, prompt_hash, render
from compress_distill.staging import Staging


def test_accounting_enforced(tmp_path: Path) -> None:
    with pytest.raises(AccountingError, match="rows_in=5"):
        write_metrics(tmp_path / "m.json", {"rows_in": 5, "rows_out": 3, "rejects": {"empty": 1}})
    assert not (tmp_path / "m.json").exists()
    write_metrics(
        tmp_path / "m.json", {"rows_in": 5, "rows_out": 3, "rejects": {"empty": 2}, "x": float("nan")}
    )
    assert read_metrics(tmp_path / "m.json")["x"] is None
    json.loads((tmp_path / "m.json").read_text())


def test_row_counter() -> None:
    c = RowCounter()
    c.seen(4)
    c.kept(2)
    c.reject("too_long")
    c.reject("empty")
    assert c.as_dict() == {"rows_in": 4, "rows_out": 2, "rejects": {"empty": 1, "too_long": 1}}
    c.seen()
    with pytest.raises(AccountingError):
        c.as_dict()


def test_render_placeholders() -> None:
    assert render("Q: {{question}} {json: 1}", question="2+2?") == "Q: 2+2? {json: 1}"
    # a field value containing a placeholder is not re-expanded
    assert render("{{a}}|{{b}}", a="{{b}}", b="x") == "{{b}}|x"
    with pytest.raises(KeyError, match="reasoning"):
        render("{{question}} {{reasoning}}", question="q")


def test_shipped_prompts_render(repo_root: Path) -> None:
    fields = {
        "question": "q",
        "reasoning": "r",
        "answer": "a",
        "raw_reasoning": "r",
        "compressed_reasoning": "c",
    }
    for path in sorted((repo_root / "prompts").rglob("*.md")):
        assert render(load_prompt(path), **fields)
        assert len(prompt_hash(path)) == 12


# --------------------------------------------------------------------------------------------- staging
def _outputs(root: Path) -> tuple[Path, Path, Path]:
    out, folder, metrics = root / "data" / "t.parquet", root / "data" / "hub", root / "metrics" / "m.json"
    with Staging() as st:
        st.file(out).write_text("old table")
        (st.folder(folder) / "shard").write_text("old shard")
        st.metrics(metrics, {"rows_in": 1, "rows_out": 1, "rejects": {}})
    return out, folder, metrics


def test_a_failed_stage_leaves_previous_outputs_and_metrics(tmp_path: Path) -> None:
    out, folder, metrics = _outputs(tmp_path)
    with pytest.raises(RuntimeError), Staging() as st:
        st.file(out).write_text("new table")
        (st.folder(folder) / "shard").write_text("new shard")
        raise RuntimeError("metrics computation failed")
    assert out.read_text() == "old table" and (folder / "shard").read_text() == "old shard"
    assert read_metrics(metrics)["rows_in"] == 1
    with pytest.raises(AccountingError), Staging() as st:  # broken accounting: nothing lands either
        st.file(out).write_text("new table")
        st.metrics(metrics, {"rows_in": 2, "rows_out": 1, "rejects": {}})
    assert out.read_text() == "old table"
    assert not any(p.name.startswith(".") for p in (tmp_path / "data").iterdir())  # no stray staging file


def test_commit_renames_outputs_first_and_metrics_last(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    real = os.replace
    monkeypatch.setattr(staging.os, "replace", lambda a, b: (order.append(Path(b).name), real(a, b)))
    with Staging() as st:
        st.metrics(tmp_path / "m.json", {"x": 1})  # staged first, still committed last
        st.file(tmp_path / "a.parquet").write_text("a")
        st.file(tmp_path / "b.parquet").write_text("b")
    assert order == ["a.parquet", "b.parquet", "m.json"]


def test_folder_swap_never_leaves_a_moment_without_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old swap renamed the destination away, then the new folder in: a window with no folder."""
    dest = tmp_path / "hub"
    dest.mkdir()
    (dest / "v").write_text("0")
    if not staging.exchange(dest, dest):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here; the documented fallback is used")
    moved_away: list[str] = []
    real = os.replace
    monkeypatch.setattr(
        staging.os,
        "replace",
        lambda a, b: (moved_away.append(str(a)) if Path(a) == dest else None, real(a, b)),
    )
    missing = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal missing
        while not stop.is_set():
            missing += not dest.is_dir()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for k in range(1, 101):
            new = tmp_path / f"new{k}"
            new.mkdir()
            (new / "v").write_text(str(k))
            staging.swap_dir(new, dest)
    finally:
        stop.set()
        watcher.join()
    assert (dest / "v").read_text() == "100" and sorted(p.name for p in tmp_path.iterdir()) == ["hub"]
    assert moved_away == [] and missing == 0


def test_staging_lives_outside_dvc_outputs_and_dead_leftovers_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    dest = tmp_path / "data" / "traces" / "T" / "raw.parquet"
    st = Staging()
    staged = st.file(dest)
    assert staged.is_relative_to(tmp_path / ".cache" / "staging")
    st.discard()
    # a pid that cannot exist on this host: a killed run; the same pid on another host may be alive
    dead = tmp_path / ".cache" / "staging" / staging.area_name().replace(str(os.getpid()), "999999999", 1)
    elsewhere = tmp_path / ".cache" / "staging" / "999999999-deadbeef-another-host"
    elsewhere.mkdir(parents=True)
    dead.mkdir()
    (dead / "0-raw.parquet").write_text("torn")
    with Staging() as st2:
        st2.file(dest).write_text("x")
    assert not dead.exists() and dest.read_text() == "x"
    assert list((tmp_path / ".cache" / "staging").iterdir()) == [elsewhere]


def _locked_elsewhere(lock: Path) -> bool:
    """Whether another process (a real one) is refused the output lock file ``lock``."""
    probe = "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)"
    return (
        subprocess.run([sys.executable, "-c", probe, str(lock)], capture_output=True, check=False).returncode
        != 0
    )


def test_an_output_is_locked_from_staging_to_commit_and_counted_within_a_process(tmp_path: Path) -> None:
    dest = tmp_path / "data" / "x.parquet"
    st = Staging()
    st.file(dest).write_text("x")
    lock = staging.lock_path(dest)
    assert _locked_elsewhere(lock)
    assert f"pid {os.getpid()} on " in lock.read_text()  # the holder, for the refusal message
    with Staging() as again:  # the same process may stage it again (e.g. after a failed run in a test)
        again.file(dest).write_text("y")
    assert _locked_elsewhere(lock)  # still held by ``st``
    st.commit()
    assert not _locked_elsewhere(lock) and dest.read_text() == "x"
    st2 = Staging()
    st2.file(dest)
    st2.discard()  # a discarded run releases its lock too
    assert not _locked_elsewhere(lock)
    unlocked = Staging(lock=False)  # a non-main rank of a distributed job stages without locking
    unlocked.file(dest)
    assert not _locked_elsewhere(lock)
