"""The validation loss (train.val_fraction) reaches the report's loss plot and its CSV (issue 10 item 5): the
trainer's own dvclive logger writes the curves, the report reads and draws them."""

from __future__ import annotations

from pathlib import Path

from compress_distill.evaluation import plots
from compress_distill.evaluation.tables import RunResult
from compress_distill.training.trainer import _Live

RUN = "smol-smol-lora-raw"


def test_validation_loss_is_read_and_drawn_beside_the_training_loss(tmp_path: Path) -> None:
    train_plots = tmp_path / "plots" / "train"
    live = _Live(train_plots / RUN, enabled=True)
    for step in (1, 2, 3, 4):
        values = {"loss": 3.0 / step, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 100.0}
        if step % 2 == 0:  # checkpoint steps, as the trainer measures it
            values["val_loss"] = 3.5 / step
        live.log(step, values)
    live.close()

    curves = plots.read_dvclive_curves(train_plots, [RUN])
    assert curves[RUN]["val_loss"] == [(2.0, 1.75), (4.0, 0.875)]
    assert [p[0] for p in curves[RUN]["loss"]] == [1.0, 2.0, 3.0, 4.0]
    rows = plots.loss_rows(curves)
    assert {(r["metric"], r["step"]) for r in rows if r["metric"] == "val_loss"} == {
        ("val_loss", 2.0),
        ("val_loss", 4.0),
    }

    run = RunResult(RUN, "smol", "smol", "lora", "raw")
    with_val = plots.svg_loss_curves(curves, {RUN: run})
    without = plots.svg_loss_curves({RUN: {"loss": curves[RUN]["loss"]}}, {RUN: run})
    # its line and markers are drawn (the legend lists "validation" either way)
    assert with_val.count("<path") > without.count("<path")
