"""The one progress set-up of every stage (``compress_distill.progress``) as the trainer uses it: steps, a
resumed start, the loss in the line (issue 11 item 6)."""

from __future__ import annotations

import pytest

from compress_distill.progress import Progress, progress_line


def test_a_resumed_runs_rate_and_eta_count_only_this_process() -> None:
    # resumed at step 40 of 100, 10 steps done in 20 s: 0.5 steps/s, 50 steps left -> 100 s
    line = progress_line("train r", 50, 100, 4000, 20.0, unit="steps", initial=40, extra="loss 1.2345")
    assert line == "train r: 50/100 steps (50%), 200.0 tok/s, loss 1.2345, ETA 00:01:40"
    # nothing done yet in this process: no rate, no ETA
    assert progress_line("train r", 40, 100, 0, 5.0, unit="steps", initial=40).endswith("ETA ?")


def test_step_lines_carry_the_extra_and_start_after_the_resumed_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with Progress(5, "train r", unit="steps", initial=3, interval_s=0.0) as bar:
        bar.update(1, 100, extra="loss 2.0000")
        bar.update(1, 100, extra="loss 1.5000")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("train r: ", 1)[1].split(" (")[0] for line in lines] == ["4/5 steps", "5/5 steps"]
    assert "loss 2.0000, ETA" in lines[0] and lines[1].endswith("loss 1.5000, ETA 00:00:00")
