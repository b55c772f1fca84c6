"""Each enumeration and the ``compressed-<C>`` naming rule are defined once (names.py, config.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from compress_distill import names
from compress_distill.config import BACKENDS, METHODS

SRC = Path(names.__file__).parent
# enumeration -> the one module that spells its members out
ENUMERATIONS = {
    "ANSWER_TYPES": (names.ANSWER_TYPES, "names.py"),
    "EVAL_GROUPS": (names.EVAL_GROUPS, "names.py"),
    "FAILURE_MODES": (names.FAILURE_MODES, "names.py"),
    "VERDICTS": (names.VERDICTS, "names.py"),
    "BACKENDS": (BACKENDS, "config.py"),
    "METHODS": (METHODS, "config.py"),
}


def _modules() -> list[tuple[str, ast.Module]]:
    return [
        (str(p.relative_to(SRC)), ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(SRC.rglob("*.py"))
    ]


def _string_sets(tree: ast.Module) -> list[tuple[int, set[str]]]:
    """The string members of every tuple/list/set display and ``Literal[...]`` subscript."""
    found = []
    for node in ast.walk(tree):
        elts = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else None
        if elts is not None:
            found.append(
                (
                    node.lineno,
                    {e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)},
                )
            )
    return found


@pytest.mark.parametrize("name", ENUMERATIONS)
def test_each_enumeration_is_spelt_out_once(name: str) -> None:
    members, home = ENUMERATIONS[name]
    sites = [
        f"{path}:{line}"
        for path, tree in _modules()
        for line, strings in _string_sets(tree)
        if set(members) <= strings
    ]
    assert len(sites) == 1 and sites[0].startswith(f"{home}:"), (
        f"{name} spelt out at {sites}; import it from {home}"
    )


def test_the_compressed_source_prefix_is_written_once() -> None:
    # a string (or an f-string's literal head) that starts with the prefix builds or parses a source name
    sites = [
        f"{path}:{node.lineno}"
        for path, tree in _modules()
        if path != "names.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("compressed-")
    ]
    assert not sites, f"use names.compressed_source / names.compressor_of at {sites}"


@pytest.mark.parametrize("compressor", ["concise", "terse", "a-b"])
def test_compressed_source_round_trips(compressor: str) -> None:
    assert names.compressed_source(compressor) == f"compressed-{compressor}"
    assert names.compressor_of(names.compressed_source(compressor)) == compressor


@pytest.mark.parametrize("source", [*names.PLAIN_SOURCES, "compressed", "compress-x"])
def test_other_sources_have_no_compressor(source: str) -> None:
    assert names.compressor_of(source) is None
