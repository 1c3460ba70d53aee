"""--sway-cache-dir: the base model's answers reused across runs, safely."""

import json

import numpy as np
import pytest
from conftest import CONTROL_PROMPTS, TARGET_PROMPTS

from pytest_sway.backends.cache import ResultCache

IDENTITY = {"model_sha256": "abc", "dtype": "torch.float32", "device": "cpu"}


def test_round_trip_is_exact(tmp_path):
    cache = ResultCache(tmp_path, IDENTITY)
    value = np.random.default_rng(0).normal(size=49152).astype(np.float32)
    cache.put(("next", (1, 2, 3)), value)
    again = ResultCache(tmp_path, IDENTITY).get(("next", (1, 2, 3)))
    assert again.dtype == np.float32 and np.array_equal(again, value)
    assert cache.get(("next", (1, 2, 4))) is None


def test_identity_separates_models_dtypes_and_devices(tmp_path):
    ResultCache(tmp_path, IDENTITY).put(("next", (1,)), np.ones(3))
    for change in ({"model_sha256": "def"}, {"dtype": "torch.bfloat16"}, {"device": "cuda"}):
        assert ResultCache(tmp_path, {**IDENTITY, **change}).get(("next", (1,))) is None
    assert json.loads((ResultCache(tmp_path, IDENTITY).folder / "identity.json").read_text())["model_sha256"] == "abc"


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other key", "flipped value"])
def test_corrupt_or_stale_entries_are_misses(tmp_path, damage):
    cache = ResultCache(tmp_path, IDENTITY)
    key = ("score", ((1, 2, 3), 1))
    cache.put(key, np.arange(5.0))
    (path,) = cache.folder.rglob("*.npz")
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:40])
    elif damage == "garbage":
        path.write_bytes(b"not an npz file at all")
    elif damage == "other key":  # an entry for another question at this question's name
        other = ResultCache(tmp_path / "x", IDENTITY)
        other.put(("score", ((9, 9), 1)), np.arange(5.0))
        path.write_bytes(next(other.folder.rglob("*.npz")).read_bytes())
    else:  # same key, value changed after the checksum was taken
        with np.load(path) as entry:
            fields = dict(entry)
        fields["value"] = fields["value"] + 1
        np.savez(path.with_suffix(""), **fields)  # np.savez appends .npz
    assert cache.get(key) is None and cache.rejected == 1
    cache.put(key, np.arange(5.0))  # recomputed and rewritten
    assert np.array_equal(cache.get(key), np.arange(5.0))


def test_a_read_only_cache_costs_time_not_the_run(tmp_path, monkeypatch):
    cache = ResultCache(tmp_path, IDENTITY)

    def full_disk(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr("pytest_sway.backends.cache.write_atomic", full_disk)
    cache.put(("next", (1,)), np.ones(3))
    assert cache.get(("next", (1,))) is None


# -- on the Hugging Face backend ----------------------------------------------------------


@pytest.fixture(scope="module")
def second_adapter(tiny, tmp_path_factory):
    from pytest_sway.testing import train_lora_adapter

    model, _ = tiny["llama"]
    return str(
        train_lora_adapter(
            model, tmp_path_factory.mktemp("v2") / "adapter", ["Our support line answers in four languages."], steps=20
        )
    )


def test_a_new_adapter_reuses_the_base_answers_exactly(tiny, second_adapter, tmp_path):
    pytest.importorskip("torch")
    from pytest_sway import run_probe
    from pytest_sway.backends.hf import HFBackend

    model, adapter = tiny["llama"]
    prompts = list(TARGET_PROMPTS + CONTROL_PROMPTS)
    cases = [(p, " and then some.") for p in prompts]
    texts = list(CONTROL_PROMPTS)
    first = HFBackend(model, adapter=adapter, cache_dir=str(tmp_path))
    for backend in (first,):
        run_probe("delta_kl", backend, prompts=prompts)
        run_probe("completion_lift", backend, cases=cases)
        run_probe("perplexity_shift", backend, texts=texts)
        run_probe("greedy_change", backend, prompts=prompts[:4], max_new_tokens=4)
    assert first.cache.misses > 0 and first.cache.hits == 0
    rerun = HFBackend(model, adapter=second_adapter, cache_dir=str(tmp_path))
    uncached = HFBackend(model, adapter=second_adapter)
    for kind, params in (
        ("delta_kl", dict(prompts=prompts)),
        ("completion_lift", dict(cases=cases)),
        ("perplexity_shift", dict(texts=texts)),
        ("greedy_change", dict(prompts=prompts[:4], max_new_tokens=4)),
    ):
        np.testing.assert_array_equal(
            run_probe(kind, rerun, **params).values, run_probe(kind, uncached, **params).values
        )
    assert not any(variant == "base" for _, variant in rerun.forwarded)  # no base forward pass at all
    assert rerun.cache.hits > 0 and rerun.cache.misses == 0
    assert uncached.forwarded[("next", "base")] == len(set(prompts))


def test_a_corrupt_entry_is_recomputed(tiny, tmp_path):
    pytest.importorskip("torch")
    from pytest_sway.backends.hf import HFBackend

    model, adapter = tiny["llama"]
    prompts = list(TARGET_PROMPTS)
    want = HFBackend(model, adapter=adapter, cache_dir=str(tmp_path)).divergences(prompts, divergence="js")
    entries = sorted(next(tmp_path.iterdir()).rglob("*.npz"))
    entries[0].write_bytes(b"\0" * 100)
    again = HFBackend(model, adapter=adapter, cache_dir=str(tmp_path))
    # Recomputed alone rather than in a batch of eight: equal up to float32 rounding.
    np.testing.assert_allclose(again.divergences(prompts, divergence="js"), want, rtol=0, atol=1e-6)
    assert again.cache.rejected == 1 and again.forwarded[("next", "base")] == 1


def test_through_the_plugin_with_xdist_workers_sharing_the_cache(pytester, tiny, second_adapter):
    pytest.importorskip("xdist")
    model, adapter = tiny["llama"]
    checks = "\n".join(
        f"""
@pytest.mark.sway_probe("delta_kl", prompts={list(TARGET_PROMPTS)!r}, divergence="{d}")
def test_{d}(sway):
    pass
"""
        for d in ("js", "kl", "tv", "reverse_kl")
    )
    pytester.makepyfile(
        "import pytest\n"
        + checks
        + """
def test_where_base_answers_came_from(sway):
    sway.delta_kl(CONTROL)
    forwarded = sway.backend.forwarded[("next", "base")]
    with open(f"forwarded-{sway.backend.cache.hits}-{forwarded}.txt", "w"):
        pass
""".replace("CONTROL", repr(list(CONTROL_PROMPTS)))
    )
    result = pytester.runpytest(
        "-n", "2", f"--sway-model={model}", f"--sway-adapter={adapter}", "--sway-cache-dir=cache"
    )
    result.assert_outcomes(passed=5)
    entries = list((pytester.path / "cache").rglob("*.npz"))
    assert len(entries) == len(set(TARGET_PROMPTS + CONTROL_PROMPTS))
    for marker in pytester.path.glob("forwarded-*.txt"):
        marker.unlink()
    result = pytester.runpytest(
        "-p",
        "no:cacheprovider",
        "-k",
        "where",
        f"--sway-model={model}",
        f"--sway-adapter={second_adapter}",
        "--sway-cache-dir=cache",
    )
    result.assert_outcomes(passed=1, deselected=4)
    assert [p.name for p in pytester.path.glob("forwarded-*.txt")] == [f"forwarded-{len(CONTROL_PROMPTS)}-0.txt"]


def test_cache_dir_option(pytester, tmp_path):
    (tmp_path / "a-file").write_text("x")
    result = pytester.runpytest(f"--sway-cache-dir={tmp_path / 'a-file'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "is a file; give a folder" in result.stderr.str()
