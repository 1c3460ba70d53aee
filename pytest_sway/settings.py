"""Run-wide settings: command-line options merged over ini values, validated once.

Pure: no pytest import. The plugin declares one command-line option and one
ini twin per entry of ``OPTIONS``, hands the raw strings to
:meth:`Settings.from_raw`, and turns a :class:`SettingsError` into a
``pytest.UsageError`` before any test runs.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .backends.base import DEFAULT_BATCH_SIZE
from .errors import HF_INSTALL_HINT
from .reports.outputs import StepSummary
from .stats.drivers import DEFAULT_DRIVERS
from .stats.methods import DEFAULT_CONFIDENCE, DEFAULT_METHOD, DEFAULT_RESAMPLES, MAX_RESAMPLES, check_resamples
from .stats.methods import METHODS as CI_METHODS
from .suites.spec import SUITE_HELP, Suite, parse_suite, parse_thresholds


class SettingsError(ValueError):
    """A bad option value; the message names the option and the fix."""


@dataclass(frozen=True)
class Option:
    """One setting: ``--sway-<name>`` on the command line, ``sway_<name>`` in ini.

    Declared once, on its :class:`Settings` field (see :func:`option`): the
    plugin derives the flag, the ini twin and the help from it, the settings
    parse with it, and ``backend=True`` options reach the backend by name.
    """

    name: str
    help: str
    parse: Callable[[str, Path], Any]
    default: str | None = None
    metavar: str = "VALUE"
    backend: bool = False

    @property
    def flag(self) -> str:
        return "--sway-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "sway_" + self.name


def option(
    help: str,
    parse: Callable[[str, Path], Any],
    default: str | None = None,
    metavar: str = "VALUE",
    *,
    backend: bool = False,
) -> Any:
    """A :class:`Settings` field that is also a command-line option and an ini value.

    ``default`` is the raw text (shown in ``--help``); the field's default is what it parses to.
    """
    value = None if default is None else parse(default, Path("."))
    return field(
        default=value,
        metadata={"option": dict(help=help, parse=parse, default=default, metavar=metavar, backend=backend)},
    )


# -- parsers: raw string (+ the folder relative paths start from) -> value -----


def _where(opt: Option, source: str) -> str:
    return f"ini option {opt.ini}" if source == "ini file" else opt.flag


def _model(raw: str, base: Path) -> str:
    from .backends.builtin_models import BUILTIN_MODELS

    if raw in BUILTIN_MODELS:
        return raw
    path = _expand(raw, base)
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{path} is a file; give the model's folder (with config.json)")
        if (path / "adapter_config.json").is_file() and not (path / "config.json").is_file():
            raise ValueError(
                f"{path} is a PEFT adapter, not a model: pass it as --sway-adapter, and give the model it was "
                f"trained from as --sway-model ({_adapter_base_name(path)})"
            )
        return str(path)
    return _hub_id(raw, path, kind="model")  # transformers resolves it (offline: from its cache)


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def _adapter(raw: str, base: Path) -> str:
    path = _expand(raw, base)
    if path.exists():
        if not (path / "adapter_config.json").is_file():
            raise ValueError(f"{path} holds no adapter_config.json; give the folder that PEFT's save_pretrained wrote")
        if not any((path / name).is_file() for name in ADAPTER_WEIGHTS):
            raise ValueError(
                f"{path} has adapter_config.json but no adapter weights ({' or '.join(ADAPTER_WEIGHTS)}): the "
                "save was interrupted or the weights were not copied; save the adapter again"
            )
        return str(path)
    return _hub_id(raw, path, kind="adapter")


def _hub_id(raw: str, path: Path, *, kind: str) -> str:
    """``raw``, which names no local folder (``path`` is where it was looked for), if it has the
    form of a Hugging Face id; else an error that says the folder is missing first. Whether the
    cache or the hub holds it is checked with the other options (``Settings._locate_on_hub``):
    only the hf backend reads these values as Hugging Face ids."""
    if _looks_like_path(raw):
        raise ValueError(f"no such folder: {path} (a path, not a Hugging Face id, so the hub was not tried)")
    from .backends.locate import check_id_form

    check_id_form(raw, path, kind=kind)
    return raw


def _adapter_base_name(path: Path) -> str:
    import json

    try:
        name = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        name = None
    return f"its adapter_config.json names {name!r}" if name else "its adapter_config.json names none"


def _same_path(a: str, b: str) -> bool:
    from .reports.outputs import resolved  # the one notion of "the same file" (symlinks followed)

    return a == b or resolved(a) == resolved(b)


def _backend(raw: str, base: Path) -> str:
    if raw in ("auto", "dummy", "hf", "vllm"):
        return raw
    if ":" not in raw:
        raise ValueError("expected auto, dummy, hf, vllm, or module:factory (e.g. mypkg.backends:make_backend)")
    from .backends import load_factory

    load_factory(raw)
    return raw


def _engine_args(raw: str, base: Path) -> dict:
    from .backends.vllm.engine import parse_engine_args

    return parse_engine_args(raw)


def _int(minimum: int):
    def parse(raw: str, base: Path) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"expected an integer >= {minimum}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return parse


def _device(raw: str, base: Path) -> str:
    if raw in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", raw):
        return raw
    raise ValueError("expected auto, cpu, cuda, cuda:N or mps")


def _text(raw: str, base: Path) -> str:
    return raw


def _choice(message: str, *choices: str):
    def parse(raw: str, base: Path) -> str:
        if raw not in choices:
            raise ValueError(message)
        return raw

    return parse


_dtype = _choice("expected auto, float32, bfloat16 or float16", "auto", "float32", "bfloat16", "float16")
_ci_method = _choice(f"unknown CI method; choose one of {', '.join(CI_METHODS)}", *CI_METHODS)
_correction = _choice("expected none or bonferroni", "none", "bonferroni")


def _number(raw: str, expected: str, ok) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"expected {expected}") from None
    if not (math.isfinite(value) and ok(value)):
        raise ValueError(f"must be {expected}")
    return value


def _confidence(raw: str, base: Path) -> float:
    return _number(raw, "a number strictly between 0 and 1, e.g. 0.95", lambda v: 0.0 < v < 1.0)


PROGRESS_MODES = ("auto", "always", "off")


def _output_file(raw: str, base: Path) -> Path:
    path = _expand(raw, base)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"folder {path.parent} does not exist; create it or choose another path")
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"folder {path.parent} is not writable")
    return path


def _markdown(raw: str, base: Path) -> Path | StepSummary:
    if raw != "github":
        return _output_file(raw, base)
    summary = os.environ.get("GITHUB_STEP_SUMMARY", "")
    if not summary.strip():
        raise ValueError(
            "github appends the summary to the file named by $GITHUB_STEP_SUMMARY, which is not set (or empty): GitHub "
            "Actions sets it in every step; elsewhere give a file path (e.g. --sway-markdown=sway-summary.md)"
        )
    try:
        return StepSummary(_output_file(summary, base))
    except ValueError as exc:
        raise ValueError(f"$GITHUB_STEP_SUMMARY={summary}: {exc}") from None


def _folder(raw: str, base: Path) -> Path:
    path = _expand(raw, base)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file; give a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create folder {path} ({exc.strerror})") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"folder {path} is not writable")
    return path


def _input_file(raw: str, base: Path) -> Path:
    path = _expand(raw, base)
    if not path.is_file():
        raise ValueError(f"no such file: {path}; create it first with --sway-save-baseline")
    return path


def _non_negative(raw: str, base: Path) -> float:
    return _number(raw, "a number >= 0", lambda v: v >= 0)


def _expand(raw: str, base: Path) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (base / path)


def _looks_like_path(raw: str) -> bool:
    """Model and adapter ids look like ``org/name``; anything else path-like is a path."""
    return raw.startswith((".", "/", "~")) or "\\" in raw or raw.count("/") > 1


@dataclass(frozen=True)
class Settings:
    model: str | None = option(
        "base model: a local folder, a Hugging Face model id, or the built-in smollm2-135m",
        _model,
        None,
        "PATH|ID",
        backend=True,
    )
    adapter: str | None = option(
        "PEFT adapter folder applied to --sway-model: the fine-tune under test", _adapter, None, "PATH", backend=True
    )
    finetuned: str | None = option(
        "a fully fine-tuned checkpoint compared with --sway-model (instead of an adapter; loads two models)",
        _model,
        None,
        "PATH|ID",
        backend=True,
    )
    device: str = option(
        "auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps", _device, "auto", "DEVICE", backend=True
    )
    dtype: str = option(
        "auto (float32 on cpu, the checkpoint's dtype elsewhere), float32, bfloat16 or float16",
        _dtype,
        "auto",
        "DTYPE",
        backend=True,
    )
    batch_size: int = option(
        "prompts per forward pass (long prompts get smaller batches)",
        _int(1),
        str(DEFAULT_BATCH_SIZE),
        "N",
        backend=True,
    )
    device_map: str | None = option(
        "passed to transformers' from_pretrained, e.g. auto to spread a model over GPUs",
        _text,
        None,
        "MAP",
        backend=True,
    )
    cache_dir: Path | None = option(
        "keep the base model's answers here across runs, so a new adapter costs only its own forward passes",
        _folder,
        None,
        "DIR",
        backend=True,
    )
    backend: str = option(
        "auto (hf when a model is given, else dummy), dummy, hf, vllm, or module:factory (a callable making one)",
        _backend,
        "auto",
        "NAME",
    )
    vllm_args: dict | None = option(
        "vLLM engine arguments by name (--sway-backend=vllm): tensor_parallel_size=8 max_logprobs=-1 ...",
        _engine_args, None, "NAME=VALUE ...",
    )  # fmt: skip
    seed: int = option("base seed; each test's bootstrap seed is derived from it and the test id", _int(0), "0", "INT")
    confidence: float = option("confidence level of every interval", _confidence, str(DEFAULT_CONFIDENCE), "LEVEL")
    #: None: 9999, or more where an interval's level needs more (see ci_methods).
    resamples: int | None = option(
        f"bootstrap resamples per interval (default: {DEFAULT_RESAMPLES}, raised where the confidence level needs "
        f"more; at most {MAX_RESAMPLES})",
        _int(1),
        None,
        "N",
    )
    ci_method: str = option(f"bootstrap interval method: {', '.join(CI_METHODS)}", _ci_method, DEFAULT_METHOD, "METHOD")
    json: Path | None = option("write every probe result to this JSON file (atomically)", _output_file, None, "PATH")
    html: Path | None = option(
        "write a self-contained HTML report (forest plot, distributions) to this file", _output_file, None, "PATH"
    )
    markdown: Path | StepSummary | None = option(
        "write a GitHub-flavoured Markdown summary (the results table, the drivers of each failure) to this file "
        "(atomically); github appends it to the file named by $GITHUB_STEP_SUMMARY",
        _markdown,
        None,
        "PATH|github",
    )
    correction: str = option(
        "multiple-testing correction across the gates: none or bonferroni",
        _correction,
        "none",
        "METHOD",
    )
    save_baseline: Path | None = option(
        "save every probe's per-item values, with provenance, to this file", _output_file, None, "PATH"
    )
    baseline: Path | None = option(
        "compare every probe, item by item, with the values saved in this file", _input_file, None, "PATH"
    )
    max_regression: float | None = option(
        "with --sway-baseline: fail a gated test whose paired CI shows a regression beyond this amount",
        _non_negative,
        None,
        "X",
    )
    progress: str = option(
        "progress of long probes and what is loaded: auto (work over 3 s; not on xdist workers), always, or off",
        _choice(f"expected one of {', '.join(PROGRESS_MODES)}", *PROGRESS_MODES),
        "auto",
        "WHEN",
    )
    drivers: int = option(
        "items a failed or inconclusive gate names: those furthest on the wrong side of its threshold (or "
        "that regressed most against the baseline); 0 names none",
        _int(0),
        str(DEFAULT_DRIVERS),
        "K",
    )
    suite: Suite | None = option(SUITE_HELP, parse_suite, None, "NAME[:PART,...]")
    suite_thresholds: dict | None = option(
        "replace the battery's gate thresholds by part, e.g. knowledge=-0.05 prompts=0.05",
        parse_thresholds, None, "PART=X ...",
    )  # fmt: skip
    #: Where each value came from, for messages: name -> "command line" / "ini file".
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_raw(
        cls,
        cli: dict[str, str | None],
        ini: dict[str, str | None],
        *,
        cwd: Path,
        ini_dir: Path,
        pytest_outputs: tuple[tuple[str, str, str], ...] = (),
    ) -> Settings:
        """Merge raw strings (command line wins over ini) and validate them.

        Relative paths are resolved against ``cwd`` for command-line values and
        against the ini file's folder for ini values, as pytest does.
        ``pytest_outputs`` are the files pytest itself will write (flag, path,
        what it is; see ``reports.outputs.pytest_outputs``): no output may be one of them.
        """
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for opt in OPTIONS:
            for given, where in ((cli.get(opt.name), "command line"), (ini.get(opt.name), "ini file")):
                if given is not None and not given.strip():
                    # An unset CI variable gives --sway-model= : running without the model would
                    # measure something else than what was asked for.
                    raise SettingsError(
                        f"{_where(opt, where)} is empty (an unset environment variable?): give it a value "
                        f"({opt.metavar}), or leave the option out"
                    )
            raw: str | None
            if cli.get(opt.name) is not None:
                raw, where, base = cli[opt.name], "command line", cwd
            elif ini.get(opt.name) is not None:
                raw, where, base = ini[opt.name], "ini file", ini_dir
            elif opt.default is not None:
                raw, where, base = opt.default, "default", cwd
            else:
                continue
            sources[opt.name] = where
            try:
                values[opt.name] = opt.parse(str(raw).strip(), base)
            except ValueError as exc:
                raise SettingsError(f"{_where(opt, where)}={raw!r}: {exc}") from None
        settings = cls(**values, sources=sources)
        settings._check_combinations(pytest_outputs)
        if settings.backend_name in ("hf", "vllm"):
            settings._locate_on_hub({"command line": cwd, "ini file": ini_dir, "default": cwd})
        return settings

    def _locate_on_hub(self, bases: dict[str, Path]) -> None:
        """Every model, adapter or checkpoint that names no local folder must be a Hugging Face id
        the local cache or (when not offline) the hub holds; else a usage error saying that the
        folder is missing, where it looked, and what the hub answered."""
        from .backends.builtin_models import BUILTIN_MODELS
        from .backends.locate import locate_on_hub

        for name, kind in (("model", "model"), ("finetuned", "model"), ("adapter", "adapter")):
            value = getattr(self, name)
            if value is None or value in BUILTIN_MODELS or Path(value).is_dir():
                continue
            try:
                locate_on_hub(value, bases[self.sources[name]] / value, kind=kind)
            except ValueError as exc:
                raise SettingsError(f"{self._name(name)}={value!r}: {exc}") from None

    def _check_combinations(self, pytest_outputs: tuple[tuple[str, str, str], ...] = ()) -> None:
        if self.backend == "dummy":
            given = [
                name
                for name in ("model", "adapter", "finetuned", "device_map", "cache_dir")
                if getattr(self, name) is not None
            ]
            if given:
                raise SettingsError(
                    f"{self._name('backend')}=dummy measures toy models, but {', '.join(self._name(n) for n in given)} "
                    "is set too and would be ignored: drop --sway-backend=dummy to test the model, or drop the "
                    "model options to run on the dummy backend"
                )
        if self.adapter is not None and self.finetuned is not None:
            raise SettingsError(
                f"{self._name('adapter')} and {self._name('finetuned')} are both set: compare the base with an "
                "adapter or with a fine-tuned checkpoint, not both"
            )
        for name in ("adapter", "finetuned"):
            if getattr(self, name) is not None and self.model is None:
                raise SettingsError(
                    f"{self._name(name)} is set but no base model: add --sway-model (the model it was trained from)"
                )
        if self.finetuned is not None and self.model is not None and _same_path(self.finetuned, self.model):
            raise SettingsError(
                f"{self._name('finetuned')} and {self._name('model')} name the same checkpoint ({self.model}): "
                "every difference would be exactly 0; give the fine-tuned checkpoint"
            )
        if self.suite_thresholds is not None and self.suite is None and self.sources["suite_thresholds"] != "ini file":
            raise SettingsError(f"{self._name('suite_thresholds')} is set, but no --sway-suite runs (add one)")
        if self.max_regression is not None and self.baseline is None:
            raise SettingsError(
                f"{self._name('max_regression')} is set but there is no baseline to regress from: add "
                "--sway-baseline=PATH (written earlier with --sway-save-baseline)"
            )
        if self.resamples is not None:
            try:
                check_resamples(self.resamples, self.confidence)
            except ValueError as exc:
                raise SettingsError(f"{self._name('resamples')}={self.resamples}: {exc}") from None
        from .reports.outputs import check_output_paths

        try:
            check_output_paths(self, pytest_outputs)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        if self.device_map is not None and self.device != "auto":
            raise SettingsError(
                f"{self._name('device_map')} and {self._name('device')} are both set: with a device map, "
                "accelerate places the model; leave --sway-device at auto"
            )
        if self.vllm_args is not None and self.backend_name != "vllm":
            raise SettingsError(
                f"{self._name('vllm_args')} is set, but the backend is {self.backend_name}: add --sway-backend=vllm "
                "to serve the model with vLLM, or drop the engine arguments"
            )
        if self.backend_name == "vllm":
            self._check_vllm()
        if self.backend_name == "hf":
            if self.model is None:
                raise SettingsError(f"{self._name('backend')}=hf needs a model: add --sway-model=PATH|ID")
            if self.adapter is None and self.finetuned is None:
                raise SettingsError(
                    f"{self._name('model')} is set, but nothing to compare it with: add --sway-adapter=PATH "
                    "(a PEFT adapter) or --sway-finetuned=PATH|ID (a fine-tuned checkpoint)"
                )
            needed = ["torch", "transformers"] + (["peft"] if self.adapter is not None else [])
            missing = [m for m in needed if importlib.util.find_spec(m) is None]
            if missing:
                raise SettingsError(
                    f"the hf backend needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                    f"installed: {HF_INSTALL_HINT}"
                )

    def _check_vllm(self) -> None:
        from .backends.vllm.engine import VLLM_INSTALL_HINT

        if self.model is None or self.adapter is None:
            raise SettingsError(
                f"{self._name('backend')}=vllm serves a base model and a LoRA adapter: add --sway-model=PATH|ID "
                "and --sway-adapter=PATH"
                + (" (a fully fine-tuned checkpoint is compared by the hf backend)" if self.finetuned else "")
            )
        if importlib.util.find_spec("vllm") is None:
            raise SettingsError(f"{self._name('backend')}=vllm needs vLLM, which is not installed: {VLLM_INSTALL_HINT}")

    def option_name(self, name: str) -> str:
        """How the user set ``name``: ``--sway-json`` or ``ini option sway_json``."""
        return self._name(name)

    def _name(self, name: str) -> str:
        opt = next(o for o in OPTIONS if o.name == name)
        return _where(opt, self.sources.get(name, "command line"))

    @property
    def backend_name(self) -> str:
        """The backend that ``auto`` resolves to."""
        if self.backend == "auto":
            return "hf" if self.model is not None else "dummy"
        return self.backend

    def loading(self) -> str:
        """What building the backend loads, in words."""
        if self.backend_name not in ("hf", "vllm"):
            return f"the {self.backend_name} backend"
        other = f"adapter {self.adapter}" if self.adapter is not None else f"fine-tuned model {self.finetuned}"
        return f"model {self.model} and {other}"

    def header(self) -> str:
        """One line for ``pytest_report_header``."""
        parts = [f"backend {self.backend_name}"]
        if self.model is not None:
            parts.append(f"model {self.model}")
        if self.adapter is not None:
            parts.append(f"adapter {self.adapter}")
        if self.finetuned is not None:
            parts.append(f"fine-tuned {self.finetuned}")
        parts.append(f"seed {self.seed}")
        return "sway: " + ", ".join(parts)

    def backend_options(self) -> dict[str, Any]:
        """The options a backend is built from, by name (``model``, ``adapter``, ``device``, ...)."""
        return {opt.name: getattr(self, opt.name) for opt in OPTIONS if opt.backend}

    def as_json(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            if f.name == "sources":
                continue
            value = getattr(self, f.name)
            out[f.name] = os.fspath(value) if isinstance(value, os.PathLike) else value
            out[f.name] = str(value) if isinstance(value, Suite) else out[f.name]
        return out


#: Every option, in declaration order.
OPTIONS = tuple(Option(f.name, **f.metadata["option"]) for f in fields(Settings) if "option" in f.metadata)
