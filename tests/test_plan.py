"""Grid expansion: the paper's 55 runs from a compact spec, plan.yaml in sync, hub mode."""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from pathlib import Path

import pytest
import yaml

from compress_distill.config import ConfigError, load_params, parse_params
from compress_distill.plan import (
    CODE_MARKER,
    Run,
    check_current,
    expand,
    expand_runs,
    find_run,
    import_closure,
    render,
    render_dvc_yaml,
)

REPO = Path(__file__).resolve().parents[1]


def test_paper_grid_is_55_runs() -> None:
    runs = expand(load_params(REPO / "configs/paper.yaml"))["runs"]
    assert len(runs) == 55
    by_teacher = Counter(r["teacher"] for r in runs.values())
    truncated = [r for r in runs.values() if r["source"] == "truncated"]
    assert len(truncated) == 7 and {r["teacher"] for r in truncated} == {"qwen397b"}
    assert by_teacher["qwen397b"] - len(truncated) == 27
    assert by_teacher["gptoss120b"] == 21
    answer_only = [r for r in runs.values() if r["source"] == "answer-only"]
    assert len(answer_only) == 6 and all(r["student"] != "gptoss20b" for r in answer_only)
    assert not [r for r in runs.values() if r["student"] == "gptoss20b" and r["method"] == "lora"]
    assert "qwen397b-qwen9b-lora-compressed-llama70b" in runs


def test_committed_plan_matches_params() -> None:
    expected = render(expand(load_params(REPO / "params.yaml")))
    assert (REPO / "plan.yaml").read_text() == expected, "run `compress-distill plan` and commit plan.yaml"


def test_demo_plan_stages() -> None:
    plan = expand(load_params(REPO / "params.yaml"))
    assert set(plan["compress"]) == {"smol-concise", "smol-terse"}
    assert plan["truncate"] == {"smol": {"teacher": "smol", "compressor": "terse"}}
    assert plan["pull"] == {} and plan["publish"] == {}
    assert len(plan["runs"]) == 6
    # verify reads every compressor's traces and judgements: listed per instance, deps by index in dvc.yaml
    assert plan["verify"]["smol"]["inputs"] == [
        "data/traces/smol/compressed-concise.parquet",
        "data/judgements/smol/concise.parquet",
        "data/traces/smol/compressed-terse.parquet",
        "data/judgements/smol/terse.parquet",
    ]
    assert plan["runs"]["smol-smol-lora-compressed-verified"]["source"] == "compressed-verified"


def test_no_verify_section_no_verify_stage() -> None:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    del data["verify"]
    data["grid"]["sources"].remove("compressed-verified")
    plan = expand(parse_params(data))
    assert plan["verify"] == {} and "smol-smol-lora-compressed-verified" not in plan["runs"]


def test_hub_mode_replaces_trace_stages() -> None:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data = copy.deepcopy(data)
    data["traces"] = {"source": "hub", "repo_ids": {"smol": "org/smol-traces"}, "revision": "v1"}
    plan = expand(parse_params(data))
    for family in ("generate", "compress", "judge", "truncate", "answer_only", "verify", "build", "publish"):
        assert plan[family] == {}
    assert plan["pull"] == {"smol": {"repo_id": "org/smol-traces", "revision": "v1"}}
    assert len(plan["runs"]) == 6


def test_runs_are_typed_and_found_by_one_lookup() -> None:
    params = load_params(REPO / "params.yaml")
    runs = expand_runs(params)
    assert all(isinstance(r, Run) and r.id == name for name, r in runs.items())
    run = find_run(params, "smol-smol-lora-compressed-concise")
    assert run == Run(teacher="smol", student="smol", method="lora", source="compressed-concise")
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.source = "raw"  # type: ignore[misc]
    # plan.yaml keeps plain mappings, one per run id: the run's fields, then its launch (train_launch)
    planned = expand(params)["runs"]
    assert planned.keys() == runs.keys()
    assert all(planned[name].items() >= r.item().items() for name, r in runs.items())
    # without grid.seeds an item carries no seed: plans (and train stages) of grids without the axis stand
    assert not any("seed" in item for item in planned.values())


def test_seeds_multiply_runs_and_suffix_names_only_when_several() -> None:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    base = expand(parse_params(data))["runs"]
    data["grid"]["seeds"] = [3]
    one = expand(parse_params(data))["runs"]
    assert one.keys() == base.keys() and {item["seed"] for item in one.values()} == {3}
    data["grid"]["seeds"] = [0, 1]
    params = parse_params(data)
    two = expand(params)["runs"]
    assert sorted(two) == sorted(f"{name}-s{seed}" for name in base for seed in (0, 1))
    assert two["smol-smol-lora-raw-s1"]["seed"] == 1
    assert find_run(params, "smol-smol-lora-raw-s1").seed == 1
    # an exclusion may name a seed: the spread of some run groups only
    data["grid"]["exclude"] = [{"source": "answer-only", "seed": 1}]
    some = expand(parse_params(data))["runs"]
    assert set(two) - set(some) == {"smol-smol-lora-answer-only-s1"}
    for bad in ([], [1, 1], [-1]):
        data["grid"]["seeds"] = bad
        with pytest.raises(ConfigError, match="grid.seeds"):
            parse_params(data)


def test_ift_is_a_source_with_its_own_stage() -> None:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["grid"]["sources"] = ["raw", "ift"]
    with pytest.raises(ConfigError, match="grid.sources lists 'ift' but params have no `ift` section"):
        parse_params(data)
    data["ift"] = {"chat_template_kwargs": {"smol": {"enable_thinking": False}}}
    plan = expand(parse_params(data))
    assert plan["ift"] == {"smol": {"teacher": "smol", "prompts": ["prompts/ift.md"]}}
    assert "prompts/ift.md" in plan["build"]["smol"]["prompts"]
    assert sorted(plan["runs"]) == ["smol-smol-lora-ift", "smol-smol-lora-raw"]
    data["ift"] = {"chat_template_kwargs": {"qwen": {"enable_thinking": False}}}
    with pytest.raises(ConfigError, match=r"ift.chat_template_kwargs \['qwen'\] not defined"):
        parse_params(data)


def test_unknown_run_is_a_fix_it_error_listing_the_defined_runs() -> None:
    params = load_params(REPO / "params.yaml")
    with pytest.raises(ConfigError) as exc:
        find_run(params, "smol-smol-lora-compressed-concse")
    msg = str(exc.value)
    assert "'smol-smol-lora-compressed-concse' is not in the grid" in msg and "\n" not in msg
    assert all(name in msg for name in expand_runs(params)) and "compress-distill plan" in msg


def test_train_looks_runs_up_like_evaluate(tmp_path: Path) -> None:
    from compress_distill.stages import train

    with pytest.raises(ConfigError, match="defined runs: smol-smol-lora-"):
        train.run(REPO / "params.yaml", "nope", tmp_path, tmp_path / "m", tmp_path / "m.json")


# ------------------------------------------------------------------------------------ generated deps
def test_committed_dvc_yaml_deps_match_code_and_params() -> None:
    text = (REPO / "dvc.yaml").read_text()
    expected = render_dvc_yaml(text, expand(load_params(REPO / "params.yaml")), REPO / "src")
    assert text == expected, "run `compress-distill plan` and commit dvc.yaml"


def test_every_stage_has_a_generated_deps_block() -> None:
    text = (REPO / "dvc.yaml").read_text()
    stages = yaml.safe_load(text)["stages"]
    marked = {line.split(CODE_MARKER)[1].strip() for line in text.splitlines() if CODE_MARKER in line}
    assert marked == {f"stages/{name}.py" for name in stages}


def _package(root: Path, files: dict[str, str]) -> Path:
    src = root / "src"
    for rel, text in files.items():
        path = src / "compress_distill" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return src


def test_import_closure_follows_every_kind_of_import(tmp_path: Path) -> None:
    src = _package(
        tmp_path,
        {
            "__init__.py": "",
            "stages/__init__.py": "",
            "stages/s.py": (
                "from __future__ import annotations\nimport json\nfrom compress_distill import plain\n"
                "from . import sibling\nfrom ..sub.deep import thing\n\n"
                "def later():\n    import compress_distill.lazy\n"
            ),
            "stages/sibling.py": "",
            "stages/other.py": "",  # imported by nobody
            "plain.py": "",
            "lazy.py": "from compress_distill.sub import helper\n",
            "sub/__init__.py": "from compress_distill.sub.registry import REGISTRY\n",
            "sub/registry.py": "REGISTRY = {}\n",
            "sub/deep.py": "def thing():\n    return 'template.html'\n",
            "sub/helper.py": "",
            "sub/template.html": "<p>read by deep.py</p>",
            "sub/unused.html": "",
        },
    )
    got = import_closure("compress_distill.stages.s", src)
    base = "src/compress_distill/"
    assert got == sorted(
        base + p
        for p in [
            "__init__.py",
            "stages/__init__.py",
            "stages/s.py",
            "stages/sibling.py",
            "plain.py",
            "lazy.py",
            "sub/__init__.py",
            "sub/registry.py",
            "sub/deep.py",
            "sub/helper.py",
            "sub/template.html",
        ]
    )


def test_each_compressor_depends_on_the_prompts_it_can_read() -> None:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    domains = {"math": "prompts/compress/math.md", "medicine": "prompts/compress/med.md"}
    data["compress"]["domain_prompts"] = domains
    data["compressors"]["domain"] = data["compressors"]["concise"]
    data["compress"]["prompt_sets"] = {"concise": "generic"}
    plan = expand(parse_params(data))
    # terse has its own prompt (it overrides the domain ones); domain uses the generic or a domain prompt.
    # dvc.yaml indexes one count per family, so the shorter list repeats its last file
    assert plan["compress"]["smol-terse"]["prompts"] == ["prompts/compress/terse.md"] * 3
    assert plan["compress"]["smol-domain"]["prompts"] == [
        "prompts/compress/generic.md",
        "prompts/compress/math.md",
        "prompts/compress/med.md",
    ]
    # compress.prompt_sets: concise is the generic arm of the generic-vs-domain axis
    assert plan["compress"]["smol-concise"]["prompts"] == ["prompts/compress/generic.md"] * 3
    assert plan["generate"]["smol"]["prompts"] == ["prompts/teacher.md"]
    assert plan["judge"]["smol-terse"]["prompts"] == ["prompts/judge.md"]
    assert set(plan["build"]["smol"]["prompts"]) == {
        "prompts/teacher.md",
        "prompts/judge.md",
        "prompts/compress/generic.md",
        "prompts/compress/terse.md",
        "prompts/compress/math.md",
        "prompts/compress/med.md",
        "prompts/verify.md",
    }
    text = render_dvc_yaml((REPO / "dvc.yaml").read_text(), plan, REPO / "src")
    start = text.index("imports of stages/compress.py")
    compress = text[start : text.index("params:", start)]
    assert [line.strip() for line in compress.splitlines() if "item.prompts" in line] == [
        "- ${item.prompts[0]}",
        "- ${item.prompts[1]}",
        "- ${item.prompts[2]}",
    ]


def test_paper_profile_switches_verified_compression_on() -> None:
    """The commented `verify:` block of configs/paper.yaml, uncommented, is valid and adds the stage per
    teacher and 7 runs per teacher once `compressed-verified` joins grid.sources."""
    text = (REPO / "configs/paper.yaml").read_text()
    start = text.index("# verify:")
    block = "\n".join(line[2:] for line in text[start : text.index("\n\n", start)].splitlines())
    data = yaml.safe_load(text) | yaml.safe_load(block)
    data["grid"]["sources"].append("compressed-verified")
    plan = expand(parse_params(data))
    assert set(plan["verify"]) == {"qwen397b", "gptoss120b"} and len(plan["runs"]) == 55 + 14


def test_a_grid_edited_without_replanning_stops_the_report(tmp_path: Path) -> None:
    # issue 13: `dvc exp run -S grid.sources=[raw]` was silently ignored (plan.yaml is generated)
    from typer.testing import CliRunner

    from compress_distill.cli import app

    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (tmp_path / "plan.yaml").write_text((REPO / "plan.yaml").read_text())
    check_current(load_params(tmp_path / "params.yaml"), tmp_path / "plan.yaml")  # in sync: no error
    edited = yaml.safe_load((tmp_path / "params.yaml").read_text())
    edited["grid"]["sources"] = ["raw"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(edited))
    result = CliRunner().invoke(app, ["report", "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 2
    assert "compress-distill plan" in result.output and len(result.output.strip().splitlines()) == 1
    # the report stage is what notices: it depends on the grid section (and traces.source)
    report = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["report"]
    assert {"grid", "traces"} <= {p for p in report["params"] if isinstance(p, str)}
