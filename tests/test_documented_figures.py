"""Every measured figure that README.md, docs/*.md or the demo config's comments quote equals its benchmark file.

Issue 21: a documented number must come from the results file it cites.  Each check below finds the sentence that
quotes the figure (whitespace-normalised, so line wrapping does not matter), reads the same figure from the
markdown table of the cited results file and asserts that the quoted text is the file's value rounded to the
precision the text uses (``8.0x`` for a file's ``7.98x``, ``10-24%`` for shares of 10.4% ... 24.2%).  A re-run of a
benchmark that moves a figure therefore fails here until the sentence is updated; a reworded sentence fails too,
with a message naming the pattern to update.  File parsing only: no model is built, nothing is trained.
"""
from __future__ import annotations

import re
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TIMING = "benchmarks/results_timing.md"
LORA = "benchmarks/results_lora_share.md"
STARTUP = "benchmarks/results_startup.md"
SPEED = "benchmarks/RESULTS.md"
CONFIG = "nfm/resources/configs/synthetic.yaml"


# ---------------------------------------------------------------- parsing helpers

def prose(rel: str) -> str:
    """The file's text with whitespace collapsed; for YAML only the comments (what follows each '#')."""
    text = (REPO / rel).read_text()
    if rel.endswith((".yaml", ".yml")):
        text = " ".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
    return " ".join(text.split())


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table in ``text`` as a list of rows, each a dict from header to cell."""
    found, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|[\s:|-]+\|\s*$", lines[i + 1]):
            header = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            rows, i = [], i + 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                rows.append(dict(zip(header, cells)))
                i += 1
            found.append(rows)
        else:
            i += 1
    return found


def table(rel: str, *columns: str, section: str | None = None) -> list[dict[str, str]]:
    """The first table of ``rel`` (or of its ``<!-- section:begin/end -->`` block) that has all ``columns``."""
    text = (REPO / rel).read_text()
    if section is not None:
        m = re.search(rf"<!-- {section}:begin -->(.*?)<!-- {section}:end -->", text, re.S)
        assert m, f"{rel}: no '{section}' section"
        text = m.group(1)
    for rows in tables(text):
        if rows and all(c in rows[0] for c in columns):
            return rows
    raise AssertionError(f"{rel}: no table with columns {columns}")


def number(cell: str, index: int = 0) -> Decimal:
    """The ``index``-th number in a cell ('1,604,677' -> 1604677, '10.4%' -> 10.4, '63,488 (5.2%)' -> 63488 / 5.2)."""
    nums = re.findall(r"\d[\d,]*(?:\.\d+)?", cell)
    assert len(nums) > index, f"no number #{index} in table cell {cell!r}"
    return Decimal(nums[index].replace(",", ""))


def rounds_to(quoted: str, value: Decimal) -> bool:
    """Whether ``quoted`` is ``value`` rounded (half up) to the number of decimals ``quoted`` shows."""
    decimals = len(quoted.split(".")[1]) if "." in quoted else 0
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP) == Decimal(quoted)


def check(doc: str, pattern: str, expected: list[tuple[str, Decimal | str]], source: str) -> None:
    """``pattern``'s groups, in ``doc``, against ``expected`` ((what, the file's value) per group)."""
    m = re.search(pattern, prose(doc))
    assert m, (f"{doc}: no sentence matching {pattern!r} (it quotes figures from {source}); if the sentence was "
               f"reworded, update tests/test_documented_figures.py to match")
    assert len(m.groups()) == len(expected)
    wrong = []
    for quoted, (what, value) in zip(m.groups(), expected):
        ok = quoted == value if isinstance(value, str) else rounds_to(quoted, value)
        if not ok:
            wrong.append(f"{what}: {doc} says {quoted}, {source} says {value}")
    assert not wrong, f"{doc} disagrees with {source} (update the text):\n  " + "\n  ".join(wrong)


# ---------------------------------------------------------------- results_timing.md (bench_demo.py)

def timing() -> dict[str, dict[str, Decimal]]:
    out = {}
    for row in table(TIMING, "run", "wall", "CPU (all processes)"):
        run = re.match(r"`([^`]+)`", row["run"]).group(1)
        load = [Decimal(x) for x in row["load average (1 min): start / median / max"].split("/")]
        out[run] = {"wall": number(row["wall"]), "cpu": number(row["CPU (all processes)"]), "load": load[1]}
    assert {"make demo", "make test", "make test-fast"} <= set(out), sorted(out)
    return out


def test_readme_timing_matches_results_timing():
    t = timing()
    check("README.md",
          r"the demo took ([\d.]+) CPU-minutes with one thread, ([\d.]+) minutes of wall time at a load average of "
          r"([\d.]+) .*?`make test` ([\d.]+) CPU-minutes \(([\d.]+) min wall at load ([\d.]+)\) and "
          r"`make test-fast` ([\d.]+) CPU-minutes \(([\d.]+) min wall\)",
          [("make demo CPU", t["make demo"]["cpu"]), ("make demo wall", t["make demo"]["wall"]),
           ("make demo load (median)", t["make demo"]["load"]),
           ("make test CPU", t["make test"]["cpu"]), ("make test wall", t["make test"]["wall"]),
           ("make test load (median)", t["make test"]["load"]),
           ("make test-fast CPU", t["make test-fast"]["cpu"]), ("make test-fast wall", t["make test-fast"]["wall"])],
          TIMING)


def test_training_doc_timing_matches_results_timing():
    demo = timing()["make demo"]
    check("docs/training.md",
          r"this took ([\d.]+) CPU-minutes with one thread \(([\d.]+) min wall at a load average of ([\d.]+);",
          [("make demo CPU", demo["cpu"]), ("make demo wall", demo["wall"]), ("make demo load (median)", demo["load"])],
          TIMING)


def test_demo_config_comment_timing_matches_results_timing():
    check(CONFIG, r"~([\d.]+) CPU-minutes with one thread \(benchmarks/results_timing\.md\)",
          [("make demo CPU", timing()["make demo"]["cpu"])], TIMING)


# ---------------------------------------------------------------- results_lora_share.md (bench_lora_share.py)

def lora_rows() -> dict[tuple[str, int], dict[str, Decimal]]:
    out = {}
    for row in table(LORA, "base", "new animal", "share", "LoRA", "per-session"):
        base = "demo" if row["base"].startswith("demo") else row["base"].removeprefix("preset ")
        units = int(number(row["new animal"], 1))
        out[base, units] = {"params": number(row["base parameters"]), "share": number(row["share"]),
                            "lora": number(row["LoRA"], 1), "per_session": number(row["per-session"], 1)}
    assert {b for b, _ in out} == {"demo", "default", "mtm", "neuroformer"}, sorted(out)
    return out


def share_range(base: str) -> list[tuple[str, Decimal]]:
    shares = [r["share"] for (b, _), r in lora_rows().items() if b == base]
    return [(f"{base}: lowest share", min(shares)), (f"{base}: highest share", max(shares))]


def test_readme_lora_share_matches_results_lora_share():
    check("README.md", r"small demo base it is (\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)%", share_range("demo"), LORA)
    check("README.md", r"`mtm` size (\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)% \(`benchmarks/results_lora_share\.md`\)",
          share_range("mtm"), LORA)


def test_demo_config_comment_lora_share_matches_results_lora_share():
    check(CONFIG, r"LoRA r=8 \+ a new animal's read-in/out: (\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)% of it",
          share_range("demo"), LORA)


def test_training_doc_lora_share_matches_results_lora_share():
    rows = lora_rows()
    m = re.search(r"for a new animal of 2 sessions x (\d+) units,.*?with (\d+) units per session", prose("docs/training.md"))
    assert m, "docs/training.md: the LoRA share sentence (2 sessions x N units ... M units per session) not found"
    small, large = int(m.group(1)), int(m.group(2))
    assert ("demo", small) in rows and ("demo", large) in rows, f"{LORA} has no rows for {small} / {large} units"
    check("docs/training.md",
          r"x \d+ units, ([\d.]+)% on the demo model \(([\d.]+) M parameters; LoRA ([\d.]+)%, per-session ([\d.]+)%\), "
          r"([\d.]+)% on the `default` preset, ([\d.]+)% on `mtm` \(([\d.]+) M\) and ([\d.]+)% on `neuroformer`; "
          r"with \d+ units per session \(MtM's IBL mean\) ([\d.]+)%, ([\d.]+)%, ([\d.]+)% and ([\d.]+)%",
          [(f"demo share, {small} units", rows["demo", small]["share"]),
           ("demo base parameters (M)", rows["demo", small]["params"] / 10**6),
           (f"demo LoRA share, {small} units", rows["demo", small]["lora"]),
           (f"demo per-session share, {small} units", rows["demo", small]["per_session"]),
           (f"default share, {small} units", rows["default", small]["share"]),
           (f"mtm share, {small} units", rows["mtm", small]["share"]),
           ("mtm base parameters (M)", rows["mtm", small]["params"] / 10**6),
           (f"neuroformer share, {small} units", rows["neuroformer", small]["share"])]
          + [(f"{b} share, {large} units", rows[b, large]["share"]) for b in ("demo", "default", "mtm", "neuroformer")],
          LORA)


# ---------------------------------------------------------------- RESULTS.md speed section (run_all.py)

def speed_goals() -> list[dict[str, str]]:
    return table(SPEED, "goal", "measure", "value", "target", "met", section="speed")


def goal_row(goal: int, measure: str) -> dict[str, str]:
    rows = [r for r in speed_goals() if r["goal"] == str(goal) and re.search(measure, r["measure"])]
    assert len(rows) == 1, f"{SPEED}: {len(rows)} goal-{goal} rows match {measure!r}"
    return rows[0]


def test_readme_speed_matches_results():
    joint = goal_row(1, r"joint pretraining step vs Neuroformer")
    gen1, gen8 = goal_row(2, r"x 1 trial\(s\)"), goal_row(2, r"x 8 trial\(s\)")
    mtm = goal_row(3, r"^MtM step H128x4 vs NDT1")
    check("README.md",
          r"joint step ([\d.]+)x Neuroformer, generation ([\d.]+)x / ([\d.]+)x \(1 / 8 trials\), "
          r"MtM step ([\d.]+)x NDT1 \(goal ([\d.]+)x, (not met|met)\)",
          [("goal 1 joint step", number(joint["value"])), ("goal 2, 1 trial", number(gen1["value"])),
           ("goal 2, 8 trials", number(gen8["value"])), ("goal 3 MtM step H128x4", number(mtm["value"])),
           ("goal 3 target", number(mtm["target"])), ("goal 3 met", "met" if "yes" in mtm["met"] else "not met")],
          SPEED)


def test_performance_doc_compile_matches_results():
    row = goal_row(5, r"torch\.compile")
    compile_s = re.search(r"first call \(compile\) (\d+(?:\.\d+)?) s", row["measure"])
    assert compile_s, f"{SPEED}: goal 5 row names no compile time"
    check("docs/performance.md",
          r"compiled H128 x 4 MtM step ran at ([\d.]+)x of eager \(range ([\d.]+)-([\d.]+), RESULTS\.md goal 5\); "
          r"compiling took about \d+ minutes cold \((\d+) s with",
          [("goal 5 value", number(row["value"])), ("goal 5 range min", number(row["range (min-max over rounds)"], 0)),
           ("goal 5 range max", number(row["range (min-max over rounds)"], 1)),
           ("goal 5 compile time", Decimal(compile_s.group(1)))],
          SPEED)


# ---------------------------------------------------------------- results_startup.md (bench_startup.py)

def test_training_doc_startup_claim_matches_results_startup():
    assert "answer in a fraction of a second" in prose("docs/training.md")
    rows = [r for r in table(STARTUP, "command", "CPU s now (median)", "wall s now")
            if "--help" in r["command"] or "argument error" in r["command"]]
    assert rows, f"{STARTUP}: no --help / argument-error rows"
    slow = [r["command"] for r in rows if number(r["CPU s now (median)"]) >= 1 or number(r["wall s now"]) >= 1]
    assert not slow, f"docs/training.md says --help answers in a fraction of a second; {STARTUP}: {slow} take >= 1 s"


# ---------------------------------------------------------------- the helpers themselves

@pytest.mark.parametrize("quoted, value, ok", [("8.0", "7.98", True), ("24", "23.83", True), ("95", "94.60", True),
                                               ("10", "10.4", True), ("7.5", "7.4", False), ("0.94", "0.943557", True),
                                               ("14.0", "14.05", False), ("1.14", "1.14", True)])
def test_rounds_to(quoted, value, ok):
    assert rounds_to(quoted, Decimal(value)) is ok


def test_check_reports_a_stale_figure(tmp_path, monkeypatch):
    (tmp_path / "doc.md").write_text("the demo took 9.9\nCPU-minutes\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    with pytest.raises(AssertionError, match="says 9.9, src says 7.4"):
        check("doc.md", r"took ([\d.]+) CPU-minutes", [("cpu", Decimal("7.4"))], "src")
    with pytest.raises(AssertionError, match="no sentence matching"):
        check("doc.md", r"took ([\d.]+) CPU-hours", [("cpu", Decimal("7.4"))], "src")
