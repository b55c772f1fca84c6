"""The GPU node's package set (configs/constraints-gpu.txt) agrees with pyproject.toml and with the
requirements of the vLLM release it was made for, so `make setup-gpu` resolves without backtracking."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = REPO / "configs/constraints-gpu.txt"
RECORDED = "#   requires: "  # a vLLM requirement, as recorded in the constraints file's header
# the machine the set is for (the header: Linux x86_64, Python 3.11 and 3.12)
GPU_NODES = [
    {"platform_machine": "x86_64", "platform_system": "Linux", "sys_platform": "linux", "python_version": v}
    for v in ("3.11", "3.12")
]


def pins(text: str) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line (names canonical); a name pinned twice fails."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier  # one exact pin per line
        assert spec.operator == "==", line
        name = canonicalize_name(req.name)
        assert name not in out, f"{name} pinned twice"
        out[name] = spec.version
    return out


def recorded_requirements(text: str) -> list[Requirement]:
    return [
        Requirement(line.removeprefix(RECORDED)) for line in text.splitlines() if line.startswith(RECORDED)
    ]


def unmet(requirements: list[Requirement], pinned: dict[str, str]) -> list[str]:
    """Requirements (applying on a GPU node) whose package is not pinned or pinned outside the specifier."""
    bad = []
    for req in requirements:
        if req.marker is not None and not any(req.marker.evaluate(env) for env in GPU_NODES):
            continue
        version = pinned.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            bad.append(f"{req} (pinned: {version})")
    return bad


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


@pytest.fixture(scope="module")
def text() -> str:
    return CONSTRAINTS.read_text(encoding="utf-8")


def test_every_package_of_the_project_and_its_gpu_extra_is_pinned_within_its_specifier(
    project: dict, text: str
) -> None:
    needed = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["gpu"]]]
    assert unmet(needed, pins(text)) == []


def test_the_pins_meet_the_recorded_requirements_of_the_chosen_vllm(project: dict, text: str) -> None:
    pinned = pins(text)
    (vllm,) = [Requirement(r) for r in project["optional-dependencies"]["gpu"] if r.startswith("vllm")]
    # one vLLM release: the gpu extra, the pin and the header name the same one
    assert str(vllm.specifier) == f"=={pinned['vllm']}"
    assert f"vllm {pinned['vllm']} Requires-Dist" in text
    recorded = recorded_requirements(text)
    names = {canonicalize_name(r.name) for r in recorded}
    assert {"torch", "transformers", "xgrammar"} <= names, "the header must record vLLM's pins"
    assert unmet(recorded, pinned) == []
    # the torch the CPU tests run is the torch vLLM requires: the trainer is tested on the GPU node's torch
    (cpu_torch,) = [Requirement(r) for r in project["dependencies"] if r.startswith("torch")]
    (vllm_torch,) = [r for r in recorded if r.name == "torch"]
    assert str(cpu_torch.specifier) == str(vllm_torch.specifier) == f"=={pinned['torch']}"


def test_a_pin_outside_a_requirement_is_reported() -> None:
    # the check itself can fail: a transformers pin above vLLM's cap, a missing package
    reqs = [Requirement("transformers<5.20.0,>=5.16.1"), Requirement("torch==2.13.0")]
    assert unmet(reqs, {"transformers": "5.23.0"}) == [
        "transformers<5.20.0,>=5.16.1 (pinned: 5.23.0)",
        "torch==2.13.0 (pinned: None)",
    ]
    assert unmet([Requirement('tilelang; platform_system == "Darwin"')], {}) == []
