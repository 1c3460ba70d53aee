"""Every example in the README and the documentation runs as shown, and the figures the pages give
about the project itself are the project's.

The convention, described for writers in docs/development.md ("The examples are tested"):

- a ```python block runs (exec, fresh namespace, temporary folder); ``print(x)  # TEXT`` states
  what it prints;
- a ```python title="PATH" block is a file, written to PATH where the page's ```bash blocks run;
- a ```bash block runs with ``bash -e`` in the page's folder and must exit 0, unless an HTML comment
  on the line before says otherwise: ``<!-- test: exit N -->``, ``<!-- test: output below -->``
  (the next block's lines must appear in its output), ``<!-- test: as in .ci/run -->`` (checked
  against .ci/run, not run), ``<!-- test: skip, REASON -->`` (listed in SKIPPED below);
- ```text, ```json, ```markdown, ```console are shown, not run; ```ini, ```toml, ```yaml are
  configuration, checked where they name an option or a file of the repository;
- ``<!-- fact: NAME -->value<!-- /fact -->`` marks a figure about the project, computed in
  test_the_facts_the_pages_give_are_the_projects.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]

#: Pages whose examples another test runs, with its own markers: not held to this convention.
RUN_ELSEWHERE = {"docs/gate-your-own-adapter.md": "tests/test_gate_your_own_adapter.py"}

RUN = {"python", "bash"}
SHOWN = {"text", "console", "json", "markdown"}
CONFIG = {"ini", "toml", "yaml"}

#: Every block not run, by page and first line, and why. Keep this short: a block belongs here only
#: when running it in the tests is impossible or already done another way.
SKIPPED = {
    ("docs/performance.md", "python3 benchmarks/bench_gpu.py --device cuda --shapes 1b,8b --prompts 512 --out gpu.json"): "needs a CUDA GPU",
    ("docs/development.md", "mkdocs build --strict"): "test_the_site_builds builds the pages into a temporary folder",
    ("README.md", 'pip install "pytest-sway[vllm]"'): "needs vLLM and its engine",
    ("README.md", "pytest --sway-model=./base --sway-adapter=./runs/v3 --sway-suite=default"): "a model and adapter of the reader's; the demo runs the battery in .ci/run",
    ("docs/battery.md", "pytest --sway-model=./base --sway-adapter=./runs/v3 --sway-suite=default"): "a model and adapter of the reader's; the demo runs the battery in .ci/run",
    ("docs/scale.md", 'pip install "pytest-sway[vllm]"'): "needs vLLM and its engine",
    ("docs/scale.md", "HF_HUB_OFFLINE=1 python benchmarks/bench_vllm.py --prompts 12 \\"): "needs vLLM and a minute of engine start",
    ("docs/scale.md", "# node 1"): "needs a Ray cluster of GPU nodes",
}  # fmt: skip

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(r"^<!-- test: (?P<what>.*?) -->$")
_FACT = re.compile(r"<!-- fact: (?P<name>[\w-]+) -->(?P<value>.*?)<!-- /fact -->")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    title: str | None
    code: str
    directive: str | None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def first_line(self) -> str:
        return self.code.strip().splitlines()[0] if self.code.strip() else ""


def blocks(page: str) -> list[Block]:
    """The fenced blocks of a page, in order (a fence closes only with one at least as long)."""
    lines = (ROOT / page).read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = len(opening["indent"]), opening["fence"], opening["info"].strip()
        end = i + 1
        while end < len(lines) and not re.fullmatch(rf" *{fence}`*\s*", lines[end]):
            end += 1
        assert end < len(lines), f"{page}:{i + 1}: a block that never closes"
        code = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
        title = re.search(r'title="([^"]*)"', info)
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        directive = _DIRECTIVE.match(before)
        out.append(
            Block(
                page=page,
                line=i + 1,
                lang=info.split()[0] if info else "",
                title=title.group(1) if title else None,
                code=code,
                directive=directive["what"] if directive else None,
            )
        )
        i = end + 1
    return out


def _clauses(block: Block) -> list[str]:
    """A directive's clauses, split at ';' (a skip's reason is one clause, whatever it holds)."""
    if not block.directive:
        return []
    if block.directive.startswith("skip, "):
        return [block.directive]
    return [clause.strip() for clause in block.directive.split(";")]


def _checked_pages() -> list[str]:
    return [p for p in PAGES if p not in RUN_ELSEWHERE]


def _all_blocks() -> list[Block]:
    return [b for page in _checked_pages() for b in blocks(page)]


def _prose(page: str) -> str:
    """The page without its fenced blocks and inline code: what a reader reads as text."""
    text = (ROOT / page).read_text()
    kept, fenced = [], None
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if fenced is None and opening:
            fenced = opening["fence"]
        elif fenced is not None and re.fullmatch(rf" *{fenced}`*\s*", line):
            fenced = None
        elif fenced is None:
            kept.append(line)
    return re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", "\n".join(kept))


# -- the convention itself ----------------------------------------------------------------------


def test_every_block_says_what_it_is():
    untagged = [f"{b.where}: ```{b.lang}" for b in _all_blocks() if b.lang not in RUN | SHOWN | CONFIG]
    assert not untagged, (
        "tag each block with what it is: python or bash (run by the tests), "
        f"{', '.join(sorted(SHOWN | CONFIG))} (shown): {untagged}"
    )


def test_directives_are_known_and_sit_on_bash_blocks():
    bad = []
    for b in _all_blocks():
        if b.directive is None:
            continue
        clauses = _clauses(b)
        known = all(re.fullmatch(r"exit \d+|output below|as in \.ci/run|skip, .+", clause) for clause in clauses)
        if b.lang != "bash" or not known:
            bad.append(f"{b.where}: <!-- test: {b.directive} --> on ```{b.lang}")
    assert not bad, bad


def test_the_skipped_blocks_are_the_listed_ones():
    skipped = {(b.page, b.first_line) for b in _all_blocks() if b.directive and b.directive.startswith("skip, ")}
    assert skipped == set(SKIPPED), (
        "a block not run must be listed, with its reason, in SKIPPED in tests/test_docs.py",
        skipped ^ set(SKIPPED),
    )


def test_the_ci_blocks_are_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    found = False
    for b in _all_blocks():
        if b.directive != "as in .ci/run":
            continue
        found = True
        for line in b.code.splitlines():
            for command in filter(None, (c.strip() for c in line.split("&&"))):
                assert command in ci, f"{b.where}: `{command}` is not in .ci/run; update the block or .ci/run"
    assert found


def test_titled_files_are_run_by_a_bash_block_on_their_page():
    for page in _checked_pages():
        page_blocks = blocks(page)
        files = [b for b in page_blocks if b.lang == "python" and b.title]
        runs = [b for b in page_blocks if b.lang == "bash" and _runs(b)]
        assert not files or runs, f"{page}: {[b.where for b in files]} are files no command on the page runs"


# -- python blocks ------------------------------------------------------------------------------


def _python_blocks() -> list[Block]:
    return [b for b in _all_blocks() if b.lang == "python" and not b.title]


def _matches(expected: str, actual: str) -> bool:
    """``expected`` with ``...`` standing for any text, against one line."""
    pattern = "".join(".*" if part == "..." else re.escape(part) for part in re.split(r"(\.\.\.)", expected))
    return re.fullmatch(pattern, actual) is not None


@pytest.mark.parametrize("block", _python_blocks(), ids=lambda b: b.where)
def test_python_block(block, tmp_path, monkeypatch, capsys):
    if "pytest_sway.testing" in block.code or "HFBackend" in block.code:
        pytest.importorskip("torch")
        pytest.importorskip("peft")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    exec(compile(block.code, block.where, "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    stated = re.findall(r"^\s*print\(.*\)\s+# (.*)$", block.code, re.M)
    assert len(printed) == len(stated), (block.where, "printed", printed, "stated", stated)
    for says, did in zip(stated, printed):
        assert _matches(says, did), f"{block.where}: the comment says {says!r}, it printed {did!r}"


def test_the_library_example_measures_every_prompt(capsys):
    """The first example of docs/library.md, as tests/test_readme.py checked it in the README."""
    block = next(b for b in blocks("docs/library.md") if b.lang == "python")
    namespace: dict = {}
    exec(compile(block.code, block.where, "exec"), namespace)
    assert "ProbeResult(delta_kl(js)" in capsys.readouterr().out
    assert len(namespace["result"].values) == len(namespace["prompts"]) == 32


def test_the_inconclusive_message_shown_is_the_one_produced():
    from pytest_sway import DummyBackend, Sway

    result = Sway(DummyBackend(), seed=3).delta_kl([f"a{i}" for i in range(10)])
    with pytest.raises(AssertionError) as failure:
        result.assert_above(0.03)
    assert str(failure.value) in (ROOT / "docs" / "gates.md").read_text()


# -- bash blocks --------------------------------------------------------------------------------


def _runs(block: Block) -> bool:
    return block.lang == "bash" and not (
        block.directive and (block.directive == "as in .ci/run" or block.directive.startswith("skip, "))
    )


def _pages_with_commands() -> list[str]:
    return [page for page in _checked_pages() if any(_runs(b) for b in blocks(page))]


#: A stand-in for a project's own gates, on the tiny model: tests/sway in the pages' commands.
STANDIN_SUITE = '''"""Two gates on the tiny test model: the tests/sway the pages' commands run."""

import pytest

LEARNED = {learned!r}
OTHER = {other!r}


@pytest.mark.sway_probe("delta_kl", prompts=LEARNED, above=0.3)
def test_moves_what_it_learned():
    pass


@pytest.mark.sway_probe("delta_kl", prompts=OTHER, below=0.25)
def test_leaves_the_rest():
    pass
'''


@pytest.fixture(scope="module")
def standins(tiny, tmp_path_factory):
    """``base``, ``runs/v2``, ``runs/v3``, ``runs/v3-merged`` and ``tests/sway``: a project of one's
    own, on the tiny Llama-style model (v3 is the session's tiny adapter, 50 steps; v2 has 10)."""
    from conftest import CONTROL_PROMPTS, TARGET_PROMPTS, TARGET_TEXTS
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_sway.testing import train_lora_adapter

    base, v3 = tiny["llama"]
    root = tmp_path_factory.mktemp("standins")
    v2 = train_lora_adapter(base, root / "v2", TARGET_TEXTS, steps=10)
    merged = root / "v3-merged"
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), v3).merge_and_unload().save_pretrained(merged)
    AutoTokenizer.from_pretrained(base).save_pretrained(merged)
    suite = root / "sway"
    suite.mkdir()
    suite_text = STANDIN_SUITE.format(learned=list(TARGET_PROMPTS), other=list(CONTROL_PROMPTS))
    (suite / "test_adapter.py").write_text(suite_text)
    return {"base": Path(base), "runs/v2": v2, "runs/v3": Path(v3), "runs/v3-merged": merged, "tests/sway": suite}


def _environment() -> dict:
    # Not this run's own pytest settings (xdist's worker, addopts, a disabled autoload); PYTEST_SWAY_* stay.
    outer = (
        "PYTEST_XDIST_",
        "PYTEST_ADDOPTS",
        "PYTEST_CURRENT_TEST",
        "PYTEST_PLUGINS",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(outer)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", COLUMNS="100", PYTHONDONTWRITEBYTECODE="1")
    return env


def _folder(page: str, root: Path, request) -> Path:
    """Where the page's commands run: the demo's files, the page's titled files, and (when the
    commands name them) the stand-ins for a project's own model, adapters and gates."""
    shutil.copytree(
        ROOT / "conftest_examples",
        root / "conftest_examples",
        ignore=shutil.ignore_patterns("sway-report.*", "sway-summary.md", "__pycache__", ".pytest_cache"),
    )
    page_blocks = blocks(page)
    commands = "\n".join(b.code for b in page_blocks if _runs(b))
    if re.search(r"\./base|runs/|tests/sway", commands):
        for name, path in request.getfixturevalue("standins").items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).symlink_to(path, target_is_directory=True)
    written: set[str] = set()
    for b in page_blocks:
        if b.lang == "python" and b.title:
            path = root / b.title
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a" if b.title in written else "w") as f:
                f.write(("\n\n" if b.title in written else "") + b.code)
            written.add(b.title)
    return root


def _holds(output: str, expected: str) -> str | None:
    """None if ``output`` holds ``expected``'s lines in order (a line ``...``: any lines between);
    else the first expected line not found."""
    lines = [line.rstrip() for line in output.splitlines()]
    segments, current = [], []
    for line in (line.rstrip() for line in expected.strip("\n").splitlines()):
        if line == "...":
            segments.append(current)
            current = []
        else:
            current.append(line)
    segments.append(current)
    at = 0
    for segment in filter(None, segments):
        for start in range(at, len(lines) - len(segment) + 1):
            if all(_matches(e, a) for e, a in zip(segment, lines[start : start + len(segment)])):
                at = start + len(segment)
                break
        else:
            return segment[0]
    return None


@pytest.mark.parametrize("page", _pages_with_commands())
def test_the_commands_of(page, tmp_path, request):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    page_blocks = blocks(page)
    if any("conftest_examples" in b.code for b in page_blocks if _runs(b)):
        pytest.importorskip("gguf")  # the demo's files run on the built-in SmolLM2
    folder = _folder(page, tmp_path / "project", request)
    for i, b in enumerate(page_blocks):
        if not _runs(b):
            continue
        clauses = _clauses(b)
        status = next((int(c.split()[1]) for c in clauses if c.startswith("exit ")), 0)
        ran = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", b.code],
            cwd=folder,
            env=_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=1800,
        )
        tail = ran.stdout[-6000:]
        assert ran.returncode == status, f"{b.where}: exit status {ran.returncode}, expected {status}\n{tail}"
        if "output below" in clauses:
            shown = next(later for later in page_blocks[i + 1 :] if later.lang in SHOWN)
            missing = _holds(ran.stdout, shown.code)
            assert missing is None, f"{b.where}: its output lacks this line of {shown.where}:\n{missing}\n\n{tail}"


# -- configuration blocks, options, links ---------------------------------------------------------


def test_ini_blocks_set_only_options_and_excerpts_are_excerpts():
    from pytest_sway.settings import OPTIONS

    known = {opt.ini for opt in OPTIONS}
    for b in _all_blocks():
        if b.lang == "ini":
            keys = set(re.findall(r"^(sway_\w+)\s*=", b.code, re.M))
            assert keys <= known, f"{b.where}: not options: {keys - known}"
        if b.lang in CONFIG and b.title:
            source = (ROOT / b.title).read_text().splitlines()
            at = 0
            for line in b.code.splitlines():
                assert line in source[at:], f"{b.where}: not in {b.title} (in this order): {line!r}"
                at = source.index(line, at) + 1


def test_the_options_table_lists_every_option():
    from pytest_sway.settings import OPTIONS

    text = (ROOT / "docs" / "options.md").read_text()
    rows = set(re.findall(r"^\| `(--sway-[\w-]+)[=`].*?\| `(sway_\w+)` \|", text, re.M))
    assert rows == {(opt.flag, opt.ini) for opt in OPTIONS}, rows ^ {(opt.flag, opt.ini) for opt in OPTIONS}


def test_the_readme_links_to_pages_that_exist():
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", (ROOT / "README.md").read_text())
    assert links
    missing = [link for link in links if "://" not in link and not (ROOT / link).exists()]
    assert not missing, missing


def test_the_site_builds(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-4000:]


# -- facts about the project -------------------------------------------------------------------------

#: A count of tests in the pages' prose that is a record of one measured run, not a claim about
#: the suite as it is; anything else must be a fact span.
RECORDS = {
    ("docs/development.md", "44 tests"),  # the H200 run of the GPU tests
    ("docs/development.md", "41 passed"),
    ("docs/development.md", "2 skipped"),
    ("docs/development.md", "1 skipped"),
}
_HIDE_CHROMIUM = '''"""A pytest plugin for tests/test_docs.py: no Chromium on this machine, whatever is installed."""

import os
import shutil

_access, _which = os.access, shutil.which


def _hidden(name) -> bool:
    return "chrom" in os.fspath(name).lower()


os.access = lambda path, mode, **kw: False if _hidden(path) else _access(path, mode, **kw)
shutil.which = lambda cmd, *a, **kw: None if _hidden(cmd) else _which(cmd, *a, **kw)
'''


def _facts_stated() -> list[tuple[str, str, str]]:
    """(page, name, value) of every fact span, outside code."""
    return [(page, m["name"], m["value"].strip()) for page in PAGES for m in _FACT.finditer(_prose(page))]


def _collected(output: str) -> int:
    found = re.findall(r"^(?:(\d+)/\d+|(\d+)) tests? collected", output, re.M)
    assert found, output[-3000:]
    selected, total = found[-1]
    return int(selected or total)


def test_counts_of_tests_in_prose_are_facts():
    unmarked = []
    for page in PAGES:
        prose = _FACT.sub("", _prose(page))
        for m in re.finditer(r"\b\d[\d,]* (?:tests|passed|skipped)\b", prose):
            if (page, m.group(0)) not in RECORDS:
                unmarked.append(f"{page}: {m.group(0)!r}")
    assert not unmarked, f"mark these as <!-- fact: NAME -->N<!-- /fact --> (or list a record in RECORDS): {unmarked}"


def test_the_facts_the_pages_give_are_the_projects(tmp_path):
    """Each fact is computed here; a drift fails naming the page and the number to write."""
    pytest.importorskip("torch")
    import pytest_sway
    from pytest_sway.probes import builtin_probes

    stated = _facts_stated()
    assert {name for _, name, _ in stated} >= {"version", "tests", "demo-tests", "chromium-skips", "gpu-tests"}
    (tmp_path / "sway_hide_chromium.py").write_text(_HIDE_CHROMIUM)
    chromium_files = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").glob("test_*.py")
        if p.name != Path(__file__).name and "chromium" in p.read_text().lower()
    )
    quiet = ["-q", "-p", "no:cacheprovider"]
    runs = {
        "tests": ([sys.executable, "-m", "pytest", "--co", *quiet, "tests"], {"SWAY_TEST_GPU": "0"}),
        "gpu-tests": ([sys.executable, "-m", "pytest", "--co", *quiet, "-k", "cuda", "tests"], {"SWAY_TEST_GPU": "1"}),
        "demo-tests": ([sys.executable, "-m", "pytest", "--co", *quiet, "conftest_examples", "--sway-suite=default"], {}),
        "chromium-skips": (
            [sys.executable, "-m", "pytest", *quiet, "-rs", "-p", "sway_hide_chromium", *chromium_files],
            {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])},
        ),
    }  # fmt: skip
    started = {
        name: subprocess.Popen(
            command,
            cwd=ROOT,
            env={**_environment(), **extra},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, (command, extra) in runs.items()
    }
    outputs = {name: process.communicate(timeout=900)[0] for name, process in started.items()}
    skipped = re.findall(r"^SKIPPED \[(\d+)\] .*Chromium", outputs["chromium-skips"], re.M)
    actual = {
        "version": pytest_sway.__version__,
        "tests": str(_collected(outputs["tests"])),
        "gpu-tests": str(_collected(outputs["gpu-tests"])),
        "demo-tests": str(_collected(outputs["demo-tests"])),
        "chromium-skips": str(sum(int(n) for n in skipped)),
        "probes": str(len(builtin_probes())),
    }
    wrong = [
        f"{page}: {name} is {value}; write {actual[name]}"
        for page, name, value in stated
        if name in actual and value != actual[name]
    ]
    unknown = sorted({name for _, name, _ in stated} - set(actual))
    assert not unknown, f"facts this test cannot compute: {unknown}"
    assert not wrong, "the pages give figures the project no longer has:\n" + "\n".join(wrong)
