"""The HTML report: self-contained, untrusted trace text escaped, rendered by headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from compress_distill.config import load_params
from compress_distill.evaluation.html import render, script_json
from compress_distill.evaluation.tables import Table
from compress_distill.stages import report
from tests.helpers.synthetic import write_grid

REPO = Path(__file__).resolve().parents[2]
TITLE = "Compress-Distill report"
# A trace that tries every way out: close the data block, open a script, an HTML comment, a textarea
# close and an inline event handler.  If any of it became markup, the page title would change.
INJECTION = (
    '</script><script>document.title="PWNED"</script><!-- </textarea><img src=x '
    "onerror=\"document.title='PWNED2'\"><svg onload=\"document.title='PWNED3'\"> @@NONCE@@ ]]>"
)


def test_script_json_cannot_close_the_block() -> None:
    data = {"t": "</script><!-- & \u2028", "n": 1}
    text = script_json(data)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == data


def test_table_cells_are_escaped() -> None:
    html = Table("t", "T <b>", ["a<"], [["<script>x</script>"]]).to_html()
    assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html and "T &lt;b&gt;" in html
    md = Table("t", "T", ["a"], [["x|y"]]).to_markdown()
    assert "x\\|y" in md


def test_page_has_one_executable_script_and_no_network() -> None:
    pairs = [
        {
            "teacher": "t",
            "compressor": "c",
            "id": "1",
            "dataset": INJECTION,
            "raw": INJECTION,
            "compressed": INJECTION,
            "verdict": INJECTION,
            "question": "",
            "answer": "",
            "response": "",
            "failure_modes": [],
            "rationale": INJECTION,
        }
    ]
    page = render(
        subtitle=INJECTION,
        headline=[(INJECTION, INJECTION)],
        tables=[Table("k", INJECTION, ["c"], [[INJECTION]])],
        figures=[],
        cost=Table("cost", "Cost", ["s"], []),
        pairs=pairs,
    )
    assert len(re.findall(r"<script\b", page)) == 2  # the JSON data block and the nonce'd viewer
    for name in ("SUBTITLE", "HEADLINE", "TABLES", "PLOTS", "COST", "TRACE_JSON"):
        assert f"@@{name}@@" not in page
    nonce = re.search(r"script-src 'nonce-([0-9a-f]{32})'", page).group(1)
    assert f'<script nonce="{nonce}">' in page
    # placeholder-like text inside untrusted content is never expanded (the nonce appears only twice)
    assert "@@NONCE@@" in page and page.count(nonce) == 2
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched from a network
    # same input, same bytes (DVC sees an unchanged output)
    again = render(
        subtitle=INJECTION,
        headline=[(INJECTION, INJECTION)],
        tables=[Table("k", INJECTION, ["c"], [[INJECTION]])],
        figures=[],
        cost=Table("cost", "Cost", ["s"], []),
        pairs=pairs,
    )
    assert again == page


# --------------------------------------------------------------------------------------------- chromium
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed: `make setup-test` installs Debian's chromium"
)


def chromium(tmp: Path, url: str, *args: str) -> str:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp / 'profile'}",
        *args,
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    params = load_params(REPO / "params.yaml")
    write_grid(root, params, n_questions=60, n_traces=12, injection=INJECTION)
    report.run(
        params,
        root / "metrics",
        root / "data/predictions",
        root / "data/hub",
        root / "reports",
        root / "plots/report",
        root / "metrics/summary.json",
        root / "plots/train",
    )
    return root


@needs_chromium
def test_chromium_renders_tables_and_trace_pairs(built: Path, tmp_path: Path) -> None:
    page = built / "reports/index.html"
    dom = chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert f"<title>{TITLE}</title>" in dom
    assert 'data-viewer="ready"' in dom  # the nonce'd viewer script ran under the page's CSP
    assert dom.count('<article class="pair"') >= 1
    for key in (
        "table3_overall_accuracy",
        "table7_group_accuracy",
        "table9_inference_efficiency",
        "table10_judge_smol",
        "table_vs_raw",
        "table_cost",
    ):
        assert f'data-table="{key}"' in dom
    assert dom.count("<svg") >= 3  # the three figures
    # verdict filter options come from the data
    assert '<option value="faithful">faithful</option>' in dom

    shot = tmp_path / "shot.png"
    chromium(tmp_path, page.as_uri(), f"--screenshot={shot}", "--window-size=1280,2000", "--hide-scrollbars")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@needs_chromium
def test_chromium_injected_markup_stays_text(built: Path, tmp_path: Path) -> None:
    # Escaping alone must hold: strip the CSP (defence in depth) so it cannot mask an escaping bug.
    html = (built / "reports/index.html").read_text(encoding="utf-8")
    csp = re.compile(r'<meta http-equiv="Content-Security-Policy"[^>]*>')
    assert csp.search(html)
    bare = tmp_path / "bare.html"
    bare.write_text(csp.sub("", html), encoding="utf-8")
    dom = chromium(tmp_path, bare.as_uri(), "--dump-dom")
    assert f"<title>{TITLE}</title>" in dom and "PWNED" not in dom.split("</title>")[0]
    assert 'data-viewer="ready"' in dom and dom.count('<article class="pair"') >= 1
    # the injected text is visible as text inside the trace columns
    assert '&lt;/script&gt;&lt;script&gt;document.title="PWNED"&lt;/script&gt;' in dom
    assert "<img" not in dom and "<svg onload" not in dom and "&lt;img src=x" in dom
    assert len(re.findall(r"<script\b", dom)) == 2

    # control: the same payload inserted raw does change the title, so the check above can fail
    control = tmp_path / "control.html"
    control.write_text(f"<html><head><title>{TITLE}</title></head><body>{INJECTION}</body></html>")
    assert "<title>PWNED" in chromium(tmp_path, control.as_uri(), "--dump-dom")
