"""docs/gate-your-own-adapter.md, as a new user meets it: ``python -m pytest_sway``, the page's
blocks, and (the slow test, a few minutes: a fresh virtual environment) the page's steps run as it
shows them.

The page's files are its blocks with a title (``title="tests/sway/pytest.ini"``: the path in the
reader's project); the commands this file runs are tagged with an HTML comment on the line before,
``<!-- page-test: NAME -->``, which the rendered page does not show.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pytest_sway
from pytest_sway import __main__ as cli
from pytest_sway.backends import builtin_models
from pytest_sway.settings import OPTIONS

ROOT = Path(__file__).parent.parent
PAGE = ROOT / "docs" / "gate-your-own-adapter.md"
EXAMPLES = ROOT / "conftest_examples"
COMMANDS = ("install", "wheel", "model-path", "train", "run")
FILES = ("train_adapter.py", "tests/sway/pytest.ini", "tests/sway/test_support_adapter.py", ".github/workflows/sway.yml")  # fmt: skip
#: What the page writes where the test has its own: the checkout, and the base model's folder.
PLACEHOLDER_CHECKOUT = "/path/to/pytest-sway"
BUILTIN_FOLDER = '"$(python -m pytest_sway model-path smollm2-135m)"'

_BLOCK = re.compile(
    r"^(?:<!-- page-test: (?P<tag>\S+) -->\n)?```(?P<lang>[\w-]*)(?: title=\"(?P<title>[^\"]+)\")?\n(?P<body>.*?)^```$",
    re.S | re.M,
)


def page_blocks() -> tuple[dict[str, str], dict[str, str]]:
    """The page's tagged commands by tag, and its files by title: exactly what a reader copies."""
    commands: dict[str, str] = {}
    files: dict[str, str] = {}
    for match in _BLOCK.finditer(PAGE.read_text()):
        for key, found in (("tag", commands), ("title", files)):
            if match[key]:
                assert match[key] not in found, f"two blocks named {match[key]!r}"
                found[match[key]] = match["body"]
    return commands, files


def _ini(text: str) -> configparser.ConfigParser:
    ini = configparser.ConfigParser()
    ini.read_string(text)
    return ini


# -- the page -----------------------------------------------------------------------------------


def test_the_page_tags_every_command_this_test_runs_and_titles_its_files():
    commands, files = page_blocks()
    assert set(commands) == set(COMMANDS)
    assert set(files) == set(FILES)
    assert PLACEHOLDER_CHECKOUT in commands["install"]
    assert BUILTIN_FOLDER in commands["train"]
    assert commands["model-path"].strip() == "python -m pytest_sway model-path smollm2-135m"
    assert commands["run"].strip() == "pytest tests/sway"


def test_the_page_names_this_version_and_no_plain_pypi_install():
    text = PAGE.read_text()
    assert f"pytest_sway-{pytest_sway.__version__}-py3-none-any.whl" in page_blocks()[0]["wheel"]
    assert f"pytest-sway-{pytest_sway.__version__}" in text  # what `pytest --version --version` lists
    assert not re.search(r"^pip install (\"|')?pytest-sway(\[hf\])?(\"|')?$", text, re.M)


@pytest.mark.parametrize("where", ["page", "conftest_examples"])
def test_the_ini_files_require_the_plugin_and_set_only_known_options(where):
    text = page_blocks()[1]["tests/sway/pytest.ini"] if where == "page" else (EXAMPLES / "pytest.ini").read_text()
    section = _ini(text)["pytest"]
    assert section["required_plugins"].split() == ["pytest-sway"]
    assert "--strict-markers" in section["addopts"].split()
    known = {opt.ini for opt in OPTIONS}
    assert {k for k in section if k.startswith("sway_")} <= known


def test_the_page_workflow_installs_like_the_example_and_gates():
    yaml = pytest.importorskip("yaml")
    page = yaml.safe_load(page_blocks()[1][".github/workflows/sway.yml"])
    example = yaml.safe_load((EXAMPLES / "ci" / "github-actions.yml").read_text())

    def step(workflow, name):
        return next(s for s in workflow["jobs"]["gate"]["steps"] if s.get("name") == name)

    install = step(page, "Install")["run"]
    assert install == step(example, "Install")["run"]
    assert "pytest-sway[hf] @ git+https://" in install
    assert "pytest tests/sway " in step(page, "Gate the adapter")["run"]
    for flag in ("--sway-json", "--sway-html", "--junitxml", "--sway-markdown=github"):
        assert flag in step(page, "Gate the adapter")["run"]
    assert step(page, "Upload the reports")["if"] == "always()"


# -- python -m pytest_sway ----------------------------------------------------------------------


def test_help_lists_the_command_and_the_built_in_models(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    assert "model-path" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        cli.main(["model-path", "--help"])
    assert done.value.code == 0
    assert "built-in models: smollm2-135m (SmolLM2-135M-Instruct" in " ".join(capsys.readouterr().out.split())


def test_an_unknown_name_is_a_usage_error_naming_the_known_ones(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["model-path", "smollm2-1.7b"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "unknown built-in model 'smollm2-1.7b'; the built-in models are: smollm2-135m (" in err
    assert "--sway-model" in err


def test_model_path_prints_only_the_folder(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(builtin_models, "ensure_smollm2", lambda: tmp_path)
    assert cli.main(["model-path", "smollm2-135m"]) == 0
    assert capsys.readouterr() == (f"{tmp_path}\n", "")


def test_model_path_without_the_hf_extra_says_how_to_install_it(monkeypatch, capsys):
    def missing():
        raise ModuleNotFoundError("No module named 'transformers'")

    monkeypatch.setattr(builtin_models, "ensure_smollm2", missing)
    assert cli.main(["model-path", "smollm2-135m"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "needs the hf extra (No module named 'transformers'): pip install 'pytest-sway[hf]'" in err


def test_python_m_pytest_sway_prints_the_built_in_folder():
    """The real thing: converts the model on first use (about 25 s, as test_smollm2 does)."""
    pytest.importorskip("torch")
    pytest.importorskip("gguf")
    done = subprocess.run(
        [sys.executable, "-m", "pytest_sway", "model-path", "smollm2-135m"],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    folder = Path(done.stdout.strip())
    assert done.stdout == f"{folder}\n"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


# -- the page's steps on a fresh virtual environment (slow) -------------------------------------


def _copy_checkout(dest: Path) -> Path:
    """The files a clone would hold (tracked, and untracked but not ignored), as they are now."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def _cuda_torch(python: Path, env: dict[str, str]) -> list[str]:
    """The CUDA libraries ``pip install torch==2.13.0`` would bring into this environment (none where
    the index serves a CPU build, as on the CI machine)."""
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-", "torch==2.13.0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    )
    names = [item["metadata"]["name"] for item in json.loads(done.stdout)["install"]]
    return [n for n in names if n.startswith(("nvidia-", "triton"))]


@pytest.mark.slow
def test_slow_the_page_steps_gate_an_adapter_in_a_fresh_environment(tmp_path):
    """Install as the page says (from a checkout) into a new virtual environment, then in a new
    project: the page's model-path command, its training script (on a tiny model, in SmolLM2's place:
    seconds instead of minutes), its pytest.ini and gate, run as the page runs them. The gate passes;
    without the plugin the run stops; without the page's two lines it would have passed.

    The slow one in this suite, for its fresh install of torch, transformers and the rest: on two
    quiet cores the install took 80 s and the whole test 2 minutes; while other jobs kept the same
    cores busy, 6.5 and 8 minutes. Skipped where torch==2.13.0 would be the CUDA build.
    """
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to copy the project's files from")
    from pytest_sway.testing import build_tiny_model

    commands, files = page_blocks()
    start = time.monotonic()

    def took(what: str) -> None:
        print(f"{what}: {time.monotonic() - start:.0f} s from the start")

    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # fmt: skip
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        HF_HUB_OFFLINE="1",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHONNOUSERSITE="1",
    )
    project = tmp_path / "project"
    project.mkdir()

    def sh(command: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """A page command in the project's folder, with the fresh environment's python, pip and pytest."""
        return subprocess.run(
            ["bash", "-c", command], cwd=project, env=env, capture_output=True, text=True, timeout=timeout
        )

    def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
        assert done.returncode == 0, f"{done.args[-1]} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done

    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    cuda = _cuda_torch(venv / "bin" / "python", env)
    if cuda:
        pytest.skip(f"torch==2.13.0 would be the CUDA build here ({', '.join(cuda[:3])}, ...): gigabytes")
    took("made the environment and checked that torch would be a CPU build")
    checkout = _copy_checkout(tmp_path / "pytest-sway")
    ok(sh("pip install --quiet torch==2.13.0", timeout=1800))
    took("installed torch")
    ok(sh(commands["install"].replace(PLACEHOLDER_CHECKOUT, str(checkout)), timeout=1800))
    took("installed pytest-sway[hf] from the checkout")
    where = ok(sh("python -c 'import pytest_sway; print(pytest_sway.__file__)'")).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not the checkout
    versions = ok(sh("pytest --version --version"))
    assert f"pytest-sway-{pytest_sway.__version__}" in versions.stdout + versions.stderr

    # Step 2: the built-in model's folder; the training script, on a tiny model in SmolLM2's place.
    folder = Path(ok(sh(commands["model-path"], timeout=900)).stdout.strip())
    assert (folder / "config.json").is_file()
    base = build_tiny_model(tmp_path / "tiny-base", arch="llama")
    for title, body in files.items():  # the training script, the settings, the gate (and the workflow)
        (project / title).parent.mkdir(parents=True, exist_ok=True)
        (project / title).write_text(body)
    took("built the tiny base model")
    ok(sh(commands["train"].replace(BUILTIN_FOLDER, str(base))))
    took("trained the adapter")
    assert (project / "adapters" / "support" / "adapter_config.json").is_file()

    # Steps 3 to 5: the settings and the gate, run as the page runs them (the model: the tiny one).
    suite = project / "tests" / "sway"
    run = ok(sh(f"{commands['run'].strip()} --sway-model={base} -p no:cacheprovider"))
    took("ran the gate")
    assert re.search(r"^test_the_adapter_moves_the_support_prompts +delta_kl\(js\) +8 .*>= 0\.05 +passed$", run.stdout, re.M), run.stdout  # fmt: skip
    assert f"backend hf {base} + " in run.stdout

    # Without the plugin the page's ini stops the run; each of its two lines alone does; without
    # them the gate would pass, measuring nothing.
    without = sh("pytest tests/sway -p no:pytest_sway -p no:cacheprovider")
    assert without.returncode == 4, without.stdout + without.stderr
    assert "Missing required plugins: pytest-sway" in without.stderr
    ini = files["tests/sway/pytest.ini"]
    (suite / "pytest.ini").write_text(re.sub(r"^required_plugins = .*\n", "", ini, flags=re.M))
    strict_only = sh("pytest tests/sway -p no:pytest_sway -p no:cacheprovider")
    assert strict_only.returncode == 2, strict_only.stdout + strict_only.stderr
    assert "'sway_probe' not found in `markers` configuration option" in strict_only.stdout
    (suite / "pytest.ini").write_text(re.sub(r"^(required_plugins|addopts) = .*\n", "", ini, flags=re.M))
    unguarded = sh("pytest tests/sway -p no:pytest_sway -p no:cacheprovider")
    assert unguarded.returncode == 0, unguarded.stdout + unguarded.stderr
    assert "PytestUnknownMarkWarning" in unguarded.stdout and "1 passed" in unguarded.stdout
    took("done")
