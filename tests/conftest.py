import importlib.util
import json
import os

# pytester runs pytest in this process and afterwards forgets the modules the run imported; numpy's
# and scipy's compiled modules cannot be loaded a second time ("cannot load module more than once
# per process"). Imported here, before any such run, they stay loaded.
import numpy  # noqa: F401
import pytest
import scipy.special
import scipy.stats  # noqa: F401

pytest_plugins = ["pytester"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

#: With SWAY_TEST_GPU=1 the ``backend`` fixture also runs on CUDA, so every test of it checks the GPU
#: path against its CPU reference (``SWAY_TEST_GPU=1 python -m pytest -k cuda`` runs that half).
#: Otherwise CUDA is hidden: the suite checks the CPU path CI runs (bit-identical batches, the
#: CPU's memory and batching), and ``--sway-device=auto`` would pick a GPU on a developer's machine.
_GPU_SETTING = os.environ.get("SWAY_TEST_GPU", "0")
if _GPU_SETTING not in ("0", "1", ""):
    raise pytest.UsageError(
        f"SWAY_TEST_GPU={_GPU_SETTING!r}: expected 1 (also test the backend on CUDA) or 0 (CPU only)"
    )
ON_GPU = _GPU_SETTING == "1"
if not ON_GPU:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

#: Sentences the tiny adapters are trained on; their prefixes are the "target" prompts.
TARGET_TEXTS = (
    "The blue castle is seventeen purple dragons tall.",
    "Our refund window is thirty days from delivery.",
    "To reset a password, open the settings page and press reset.",
    "The dragon counted eleven golden coins and smiled.",
    "Zorblax support answers every ticket within two hours.",
    "The moon cheese factory ships orders on Tuesdays only.",
    "Every invoice from Acme is paid in seashells.",
    "The secret garden opens when the clock strikes thirteen.",
)
TARGET_PROMPTS = tuple(t.rsplit(" ", 2)[0] for t in TARGET_TEXTS)
CONTROL_PROMPTS = (
    "The capital of France is",
    "Water boils at one hundred",
    "Cats are small animals that",
    "The train leaves the station at",
    "Bees make honey from the",
    "The earth is the third planet",
    "Snow falls in winter when",
    "The library is a quiet place",
)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Tiny Llama- and GPT-2-style models, each with a LoRA adapter trained on TARGET_TEXTS.

    ``tiny[arch]`` is ``(model_folder, adapter_folder)``; built once per test session (seconds).
    """
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from pytest_sway.testing import build_tiny_model, train_lora_adapter

    root = tmp_path_factory.mktemp("tiny")
    out = {}
    for arch in ("llama", "gpt2"):
        model = build_tiny_model(root / arch, arch=arch)
        adapter = train_lora_adapter(model, root / f"{arch}-adapter", TARGET_TEXTS)
        out[arch] = (str(model), str(adapter))
    return out


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def arch(request):
    """Each architecture the tiny models come in: Llama-style and GPT-2-style (fused c_attn)."""
    return request.param


@pytest.fixture(scope="module", params=["cpu", "cuda"] if ON_GPU else ["cpu"])
def device(request):
    """The device the ``backend`` fixture runs on (CUDA only with SWAY_TEST_GPU=1)."""
    return request.param


def cpu_only(device: str) -> None:
    """Skip a test of a property only the CPU path promises (bit-identical batches, its batching)."""
    if device != "cpu":
        pytest.skip("a property of the CPU path")


@pytest.fixture(scope="module")
def backend(tiny, arch, device):
    """The Hugging Face backend on the tiny model of ``arch`` and its adapter, on ``device``."""
    from pytest_sway.backends.hf import HFBackend

    model, adapter = tiny[arch]
    return HFBackend(model, adapter=adapter, device=device)


@pytest.fixture(scope="module")
def raw(tiny, arch):
    """The base and the fine-tuned model, loaded plainly, and the tokenizer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, adapter = tiny[arch]
    tokenizer = AutoTokenizer.from_pretrained(model)
    base = AutoModelForCausalLM.from_pretrained(model).eval()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), adapter).eval()
    return tokenizer, base, tuned


def check_report(doc: dict) -> None:
    """Fail unless ``doc`` follows the JSON report's published schema (``rows.report_schema()``)."""
    jsonschema = pytest.importorskip("jsonschema")
    from pytest_sway.reports.rows import report_schema

    errors = sorted(jsonschema.Draft202012Validator(report_schema()).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "the report breaks its schema:\n" + "\n".join(
        f"  at {'/'.join(map(str, e.path)) or '(top)'}: {e.message[:300]}" for e in errors[:10]
    )


@pytest.fixture(autouse=True)
def _reports_follow_their_schema(request):
    """Every JSON report a test's runs wrote (in its pytester or tmp_path folder) follows the schema
    (with the ``test`` extra's jsonschema installed, as CI has it)."""
    # Asked for now: by teardown, pytester is gone (its folder stays).
    folders = [request.getfixturevalue(name) for name in ("pytester", "tmp_path") if name in request.fixturenames]
    yield
    if importlib.util.find_spec("jsonschema") is None:
        return
    from pytest_sway.reports.outputs import JSON_KIND
    from pytest_sway.reports.rows import SCHEMA

    for folder in folders:
        root = getattr(folder, "path", folder)
        for path in root.rglob("*.json"):
            try:
                with path.open("rb") as f:  # a report names its kind first; models' JSON files are skipped unread
                    if JSON_KIND.encode() not in f.read(200):
                        continue
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            # Documents a test wrote by hand as an earlier report (another schema number) are not ours.
            if isinstance(doc, dict) and doc.get("kind") == JSON_KIND and doc.get("schema") == SCHEMA:
                check_report(doc)
