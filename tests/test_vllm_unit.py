"""The vllm backend's logic without vLLM: a fake engine, deterministic from numpy, behind the real
backend, its self-checks, its engine arguments and its settings (the real engine: tests/with_vllm)."""

import importlib.util
import types
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pytest_sway.errors import BackendError, ProbeError

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
from scipy.special import log_softmax  # noqa: E402

from pytest_sway import run_probe  # noqa: E402
from pytest_sway.backends.base import BASE, FINETUNED, Variant  # noqa: E402
from pytest_sway.backends.divergence import DIVERGENCES, all_divergences  # noqa: E402
from pytest_sway.backends.token_changes import top_tokens  # noqa: E402
from pytest_sway.backends.topk import DivergenceBounds  # noqa: E402
from pytest_sway.backends.vllm import adapters, checks  # noqa: E402
from pytest_sway.backends.vllm.backend import VLLMBackend  # noqa: E402
from pytest_sway.backends.vllm.engine import (  # noqa: E402
    DEFAULT_ENGINE_ARGS,
    Engine,
    engine_args,
    parse_engine_args,
)
from pytest_sway.reports.summary import describe_backend  # noqa: E402
from pytest_sway.settings import Settings, SettingsError  # noqa: E402
from pytest_sway.workers import check_workers  # noqa: E402

PROMPTS = [f"The {w} castle is" for w in ("blue", "red", "old", "tall", "quiet", "new", "small", "dark")]
NO_VLLM = importlib.util.find_spec("vllm") is None


class FakeEngine:
    """The Engine interface, answering from a seeded log-softmax per (sequence, adapter)."""

    def __init__(self, vocab, *, max_logprobs=-1, ignore_adapter=False, gen_offset=0.0, order_noise=0.0, eos_at=None):
        self.vocab_size, self.max_logprobs, self.context_length = vocab, max_logprobs, 256
        self.args, self.version = {"max_logprobs": max_logprobs, "tensor_parallel_size": 1}, "fake"
        self.ignore_adapter, self.gen_offset, self.order_noise, self.eos_at = (
            ignore_adapter,
            gen_offset,
            order_noise,
            eos_at,
        )
        self.calls, self.adapters, self.closed = Counter(), [], False

    def row(self, seq, adapter):
        """The normalised float64 next-token log-probabilities after ``seq``."""
        key = repr((tuple(int(t) for t in seq), None if self.ignore_adapter else adapter))
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        return log_softmax(rng.normal(size=self.vocab_size) * 2.0)

    def _asked(self, op, adapter):
        self.calls[op] += 1
        self.adapters.append(adapter)

    def next_logprobs(self, seqs, adapter, k):
        self._asked("next", adapter)
        if self.max_logprobs != -1 and not 0 <= k <= self.max_logprobs:  # as vLLM: a ValueError, per request
            raise BackendError(
                f"Requested sample logprobs of {k}, which is greater than max allowed: {self.max_logprobs}"
            )
        out = []
        for i, seq in enumerate(seqs):
            row = self.row(seq, adapter) + (self.order_noise if i == 0 else 0.0)
            if k == -1:
                out.append((np.arange(self.vocab_size), row + 0.25))  # unnormalised: the backend renormalises
            else:
                ids = np.sort(np.argsort(-row)[:k])
                out.append((ids, row[ids]))
        return out

    def prompt_logprobs(self, seqs, adapter):
        self._asked("prompt", adapter)
        return [np.array([self.row(s[:j], adapter)[s[j] % self.vocab_size] for j in range(1, len(s))]) for s in seqs]

    def prompt_rows(self, seq, adapter, start):
        self._asked("rows", adapter)
        return np.stack([self.row(seq[:j], adapter) for j in range(start, len(seq))])

    def greedy(self, seqs, adapter, max_new_tokens, *, eos):
        self._asked("greedy", adapter)
        out = []
        for seq in seqs:
            ids, logp = [], []
            for step in range(max_new_tokens):
                row = self.row(tuple(seq) + tuple(ids), adapter)
                token = eos if (eos is not None and step == self.eos_at) else int(np.argmax(row))
                if token == eos:
                    break
                ids.append(token)
                logp.append(row[token] + self.gen_offset)
            out.append((tuple(ids), np.array(logp)))
        return out

    def full_row(self, ids, logp):
        return Engine.full_row(self, ids, logp)

    def close(self):
        self.closed = True


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny Llama folder (offline tokenizer), an adapter with nonzero lora_B and a fresh one (B = 0)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from pytest_sway.testing import build_tiny_model

    root = tmp_path_factory.mktemp("vllm-unit")
    model = build_tiny_model(root / "llama", arch="llama", steps=1)
    out = {"model": str(model)}
    for name, nonzero in (("adapter", True), ("fresh", False)):
        tuned = get_peft_model(
            AutoModelForCausalLM.from_pretrained(model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
        )
        if nonzero:
            generator = torch.Generator().manual_seed(1)
            with torch.no_grad():
                for pname, param in tuned.named_parameters():
                    if "lora_B" in pname:
                        param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
        tuned.save_pretrained(str(root / name), safe_serialization=True)
        out[name] = str(root / name)
    return out


def make(folders, tmp_path, engine=None, adapter="adapter", **kw):
    from transformers import AutoTokenizer

    engine = engine or FakeEngine(len(AutoTokenizer.from_pretrained(folders["model"])))
    return VLLMBackend(folders["model"], adapter=folders[adapter], engine=engine, adapter_root=tmp_path, **kw)


# -- 1. the exact path ------------------------------------------------------------------


def test_exact_divergences_tokens_and_memo(folders, tmp_path):
    backend = make(folders, tmp_path)
    fake, adapter = backend.engine, backend.adapter_path
    seqs = backend.encode_prompts(PROMPTS, chat=False)
    base = np.stack([fake.row(s, None) for s in seqs])
    tuned = np.stack([fake.row(s, adapter) for s in seqs])
    expected = all_divergences(base, tuned, np)
    for kind in DIVERGENCES:
        got = backend.divergences(PROMPTS, divergence=kind)
        assert isinstance(got, np.ndarray) and got.shape == (len(PROMPTS),)
        np.testing.assert_allclose(got, expected[kind], rtol=1e-9, atol=1e-13)
        assert (got > 0).all()
        np.testing.assert_array_equal(backend.divergences(PROMPTS, divergence=kind, variant=BASE), 0.0)
    asked = fake.calls["next"]
    backend.divergences(PROMPTS, divergence="js")
    backend.divergences(PROMPTS[::-1], divergence="kl")
    assert fake.calls["next"] == asked  # memo: no engine call
    values, tops = backend.divergences_and_tokens(PROMPTS, divergence="js", top_tokens=3)
    assert fake.calls["next"] == asked
    np.testing.assert_allclose(values, expected["js"], rtol=1e-9)
    text = backend._prompts.token_texts(set(range(fake.vocab_size)))
    for b, t, got in zip(base, tuned, tops):
        want = top_tokens(np.arange(fake.vocab_size), np.exp(b), np.exp(t), 3, text.__getitem__)
        for side in ("raised", "lowered"):
            assert [c.id for c in getattr(got, side)] == [c.id for c in getattr(want, side)] and len(want.raised) == 3
            assert [c.token for c in getattr(got, side)] == [c.token for c in getattr(want, side)]
            np.testing.assert_allclose([c.p_ft for c in getattr(got, side)], [c.p_ft for c in getattr(want, side)])
    assert describe_backend(backend.describe())  # renders
    backend.close()
    assert fake.closed


# -- 2. the bounded path ------------------------------------------------------------------


def test_bounded_divergences_contain_the_exact_ones(folders, tmp_path):
    backend = make(folders, tmp_path, engine=FakeEngine(64), top_logprobs=5)
    fake, adapter = backend.engine, backend.adapter_path
    assert backend.k == 5 and backend.describe()["logprobs"] == 5
    seqs = backend.encode_prompts(PROMPTS, chat=False)
    base = np.stack([fake.row(s, None) for s in seqs])
    tuned = np.stack([fake.row(s, adapter) for s in seqs])
    expected = all_divergences(base, tuned, np)
    for kind in DIVERGENCES:
        got = backend.divergences(PROMPTS, divergence=kind)
        assert isinstance(got, DivergenceBounds) and got.k == 5
        assert (got.low <= expected[kind] + 1e-12).all() and (expected[kind] <= got.high + 1e-12).all(), kind
        assert (got.low < got.high).all()
    result = run_probe("delta_kl", backend, prompts=PROMPTS, resamples=200)
    assert result.bounds is not None and result.bounds.k == 5
    with pytest.raises(BackendError, match="max_logprobs=-1"):
        backend.response_divergences(PROMPTS[:2], ["a", "b"], divergence="kl")
    with pytest.raises((ProbeError, BackendError), match="top-5"):
        run_probe("null_contrast", backend, prompts=PROMPTS, seeds=1, resamples=200)


def test_an_engine_with_a_small_logprobs_cap_starts_and_bounds(folders, tmp_path):
    backend = make(folders, tmp_path, engine=FakeEngine(64, max_logprobs=5))
    assert backend.k == 5 and isinstance(backend.divergences(PROMPTS, divergence="tv"), DivergenceBounds)
    assert make(folders, tmp_path, engine=FakeEngine(64, max_logprobs=5), top_logprobs=50).k == 5  # at most the cap
    assert make(folders, tmp_path, engine=FakeEngine(64, max_logprobs=8), top_logprobs=3).k == 3


# -- 3. variants ------------------------------------------------------------------------------


def test_variants_are_served_as_folders(folders, tmp_path):
    backend = make(folders, tmp_path)
    fake = backend.engine
    assert backend.lora(BASE) is None and backend.lora(FINETUNED) == str(Path(folders["adapter"]).resolve())
    for variant, kw in ((Variant(scale=0.5), {"scale": 0.5}), (Variant(null_seed=3), {"null_seed": 3})):
        fake.adapters.clear()
        backend.divergences(PROMPTS[:2], divergence="kl", variant=variant)
        folder = adapters.variant_folder(backend.adapter_path, root=tmp_path, **kw)
        assert fake.adapters == [None, str(folder)]
        assert Path(folder).parent == tmp_path and (Path(folder) / "adapter_model.safetensors").is_file()
    fake.adapters.clear()
    backend.completion_logprobs([("The blue castle is", " tall")], variant=BASE)
    assert fake.adapters == [None]


# -- 4. teacher-forced scores and generation ---------------------------------------------------


def test_scores_are_the_engines_prompt_logprobs(folders, tmp_path):
    backend = make(folders, tmp_path)
    fake, adapter = backend.engine, backend.adapter_path
    pairs = [("The blue castle is", " seventeen dragons tall."), ("Our refund window is", " thirty days")]
    sums, counts = backend.completion_logprobs(pairs)
    for (prompt, completion), s, n in zip(pairs, sums, counts):
        ids, start = backend.completion_tokens(prompt, completion, chat=False)
        want = [fake.row(ids[:j], adapter)[ids[j]] for j in range(start, len(ids))]
        assert n == len(want) > 0 and s == pytest.approx(sum(want), rel=1e-12)
    text = "The moon cheese factory ships orders on Tuesdays only."
    sums, counts = backend.text_logprobs([text], variant=BASE)
    ids = backend.tokenizer(text)["input_ids"]
    want = [fake.row(ids[:j], None)[ids[j]] for j in range(1, len(ids))]
    assert counts[0] == len(want) and sums[0] == pytest.approx(sum(want), rel=1e-12)


def test_greedy_is_memoised_and_cut_at_eos(folders, tmp_path):
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(folders["model"]))
    backend = make(folders, tmp_path, engine=FakeEngine(vocab, eos_at=3))
    fake = backend.engine
    asked = fake.calls["greedy"]
    got = backend.greedy(PROMPTS[:3], max_new_tokens=6)
    assert fake.calls["greedy"] == asked + 1
    seqs = backend.encode_prompts(PROMPTS[:3], chat=False)
    want = fake.greedy(seqs, backend.adapter_path, 6, eos=backend.tokenizer.eos_token_id)
    assert got == [ids for ids, _ in want] and all(len(ids) == 3 for ids in got)
    assert backend.tokenizer.eos_token_id not in {t for ids in got for t in ids}
    assert backend.greedy(PROMPTS[:3], max_new_tokens=6) == got
    assert fake.calls["greedy"] == asked + 2  # one engine call: the repeat came from the memo
    assert backend.greedy(PROMPTS[:3], variant=BASE, max_new_tokens=6) != got  # the base is asked separately


# -- 5. self-checks ---------------------------------------------------------------------------


def test_an_engine_that_ignores_the_adapter_is_refused_unless_the_adapter_is_fresh(folders, tmp_path):
    with pytest.raises(BackendError, match="changed nothing"):
        make(folders, tmp_path, engine=FakeEngine(64, ignore_adapter=True))
    backend = make(folders, tmp_path, engine=FakeEngine(64, ignore_adapter=True), adapter="fresh")
    assert backend.findings["adapter_change"] == 0.0


def test_prompt_and_generation_logprobs_must_agree(folders, tmp_path):
    fake = FakeEngine(64, gen_offset=0.01)
    with pytest.raises(BackendError, match="disagree") as info:
        make(folders, tmp_path, engine=fake)
    from transformers import AutoTokenizer

    seq = tuple(AutoTokenizer.from_pretrained(folders["model"])(checks.CHECK_TEXTS[0])["input_ids"])
    row = fake.row(seq, None)
    token = int(np.argmax(row))
    message = str(info.value)
    assert "base model" in message and f"token {token}" in message
    assert f"{row[token] + 0.01:.6g}" in message and f"{row[token]:.6g}" in message


def test_batch_noise_is_measured_and_reported(folders, tmp_path):
    backend = make(folders, tmp_path, engine=FakeEngine(64, order_noise=1e-6))
    assert backend.findings["noise_floor"] == pytest.approx(1e-6, rel=1e-6)
    assert backend.describe()["noise_floor"] == backend.findings["noise_floor"]
    assert "batch noise 1e-06 nats" in describe_backend(backend.describe())
    assert make(folders, tmp_path, engine=FakeEngine(64)).findings["noise_floor"] == 0.0


# -- 6. refusals -------------------------------------------------------------------------------


def test_refusals(folders, tmp_path):
    with pytest.raises(BackendError, match="--sway-backend=hf"):
        VLLMBackend(folders["model"], finetuned=folders["model"], engine=FakeEngine(64))
    with pytest.raises(BackendError, match="--sway-adapter"):
        VLLMBackend(folders["model"], engine=FakeEngine(64))
    common = {"model": folders["model"], "adapter": folders["adapter"], "backend": "vllm"}
    for extra, named in (
        ({"device_map": "auto"}, "--sway-device-map"),
        ({"device": "cpu"}, "--sway-device "),
        ({"cache_dir": tmp_path}, "--sway-cache-dir"),
    ):
        with pytest.raises(BackendError) as info:
            VLLMBackend.from_settings(Settings(**common, **extra))
        assert str(info.value).startswith(named.strip()) and ("vllm" in str(info.value).lower()), info.value


@pytest.mark.skipif(not NO_VLLM, reason="vLLM is installed here")
def test_engine_without_vllm_names_the_install():
    with pytest.raises(BackendError, match=r"pytest-sway\[vllm\]"):
        Engine("some/model", dict(DEFAULT_ENGINE_ARGS))


# -- 7. engine arguments -----------------------------------------------------------------------


def test_engine_arguments():
    raw = 'tensor_parallel_size=2, max_model_len=4096 distributed_executor_backend=ray hf_overrides={"a":1}'
    assert parse_engine_args(raw) == {
        "tensor_parallel_size": 2,
        "max_model_len": 4096,
        "distributed_executor_backend": "ray",
        "hf_overrides": {"a": 1},
    }
    assert parse_engine_args("enforce-eager=false max_logprobs=-1") == {"enforce_eager": False, "max_logprobs": -1}
    for bad, said in (
        ("foo", "not NAME=VALUE"),
        ("=1", "not NAME=VALUE"),
        ("model=x", "--sway-model"),
        ("enable_lora=false", "set by the backend"),
        ("seed=1 seed=2", "seed is given twice"),
    ):
        with pytest.raises(ValueError, match=said):
            parse_engine_args(bad)
    assert engine_args({}, dtype="auto") == DEFAULT_ENGINE_ARGS
    assert DEFAULT_ENGINE_ARGS["max_logprobs"] == -1 and DEFAULT_ENGINE_ARGS["enable_lora"] is True
    args = engine_args({"max_logprobs": 20, "dtype": "float16", "seed": 7}, dtype="bfloat16")
    assert args == {**DEFAULT_ENGINE_ARGS, "max_logprobs": 20, "dtype": "float16", "seed": 7}
    assert engine_args({}, dtype="bfloat16")["dtype"] == "bfloat16"
    for bad in (0, -2, 1.5, "all"):
        with pytest.raises(BackendError, match="max_logprobs"):
            engine_args({"max_logprobs": bad}, dtype="auto")


# -- 8. settings -------------------------------------------------------------------------------

SUITE = "def test_nothing():\n    pass\n"


def _usage_error(pytester, *args):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "passed" not in result.stdout.str()
    return result.stderr.str()


@pytest.mark.skipif(not NO_VLLM, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_is_a_usage_error(pytester, folders):
    err = _usage_error(
        pytester, "--sway-backend=vllm", f"--sway-model={folders['model']}", f"--sway-adapter={folders['adapter']}"
    )
    assert "--sway-backend=vllm needs vLLM, which is not installed" in err and 'pip install "pytest-sway[vllm]"' in err


def test_vllm_settings_are_usage_errors(pytester, folders):
    err = _usage_error(pytester, "--sway-vllm-args=tensor_parallel_size=2")
    assert "--sway-vllm-args is set, but the backend is dummy" in err
    err = _usage_error(pytester, "--sway-backend=vllm", f"--sway-model={folders['model']}")
    assert "--sway-backend=vllm serves a base model and a LoRA adapter" in err
    err = _usage_error(pytester, "--sway-vllm-args=foo")
    assert "--sway-vllm-args='foo': 'foo' is not NAME=VALUE" in err
    pytester.makeini("[pytest]\nsway_vllm_args = tensor_parallel_size=2\n")
    assert "ini option sway_vllm_args is set, but the backend is dummy" in _usage_error(pytester)


def test_ini_engine_arguments_are_parsed(monkeypatch, folders, tmp_path):
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else found(name, *a))
    settings = Settings.from_raw(
        {"backend": "vllm", "model": folders["model"], "adapter": folders["adapter"]},
        {"vllm_args": "tensor_parallel_size=2 max_model_len=512"},
        cwd=tmp_path,
        ini_dir=tmp_path,
    )
    assert settings.vllm_args == {"tensor_parallel_size": 2, "max_model_len": 512}
    assert settings.sources["vllm_args"] == "ini file"
    with pytest.raises(SettingsError, match="ini option sway_vllm_args='model=x'"):
        Settings.from_raw({}, {"vllm_args": "model=x"}, cwd=tmp_path, ini_dir=tmp_path)


def test_workers_are_refused_for_vllm_only():
    workers = types.SimpleNamespace(numprocesses=2, dist="load")
    reason = check_workers(workers, Settings(backend="vllm"))
    assert reason is not None and "-n 2" in reason and "one vLLM engine per worker" in reason
    assert check_workers(workers, Settings(backend="hf")) is None
    assert check_workers(types.SimpleNamespace(numprocesses=None, dist="no"), Settings(backend="vllm")) is None
    assert check_workers(types.SimpleNamespace(numprocesses=0, dist="load"), Settings(backend="vllm")) is None


def test_token_lists_longer_than_the_kept_candidates_are_refused(folders, tmp_path):
    from pytest_sway.backends.vllm.backend import CANDIDATES

    backend = make(folders, tmp_path)
    with pytest.raises(ValueError, match=f"at most {CANDIDATES} tokens per side"):
        backend.divergences_and_tokens(PROMPTS[:2], divergence="js", top_tokens=CANDIDATES + 1)
    _, tops = backend.divergences_and_tokens(PROMPTS[:2], divergence="js", top_tokens=CANDIDATES)
    assert all(len(t.raised) <= CANDIDATES for t in tops)
