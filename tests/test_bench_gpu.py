"""benchmarks/bench_gpu.py runs on CPU at a tiny shape, agrees with its floor, and survives a failing shape."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # its dataclass looks its module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_gpu", None)


def test_tiny_shape_on_cpu(bench, tmp_path, monkeypatch, capsys):
    real_build = bench.build_model

    def build(shape, *args, **kwargs):
        if shape == "8b":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_build(shape, *args, **kwargs)

    monkeypatch.setattr(bench, "build_model", build)
    out = tmp_path / "gpu.json"
    bench.main(
        [
            "--device",
            "cpu",
            "--shapes",
            "tiny,8b",
            "--prompts",
            "12",
            "--reps",
            "1",
            "--lora-std",
            "0.05",
            "--out",
            str(out),
        ]
    )
    info = json.loads(out.read_text())
    tiny, big = info["shapes"]["tiny"], info["shapes"]["8b"]
    assert big["error"] == "OutOfMemoryError: CUDA out of memory (simulated)" and "probes" not in big
    probe = tiny["probes"]["delta_kl"]
    assert probe["ratio"] > 0 and probe["sway_tokens_per_s"] > 0 and probe["floor_tokens_per_s"] > 0
    assert probe["mean"] > 1e-4  # the random adapter moves the distribution
    # The backend and the raw floor see the same logits (same batches): the same divergence.
    assert probe["max_abs_difference_from_floor"] < 1e-12
    agreement = tiny["float32_agreement"]
    assert agreement["float64_vs_backend_max_abs"] < 1e-12  # the backend's numbers = a float64 formula
    assert 0 < agreement["max_rel"] < 1e-2  # float32 arithmetic costs digits, not the result
    for dtype in ("bfloat16", "float32"):
        noise = tiny["noise_floor"][dtype]
        assert 0 <= noise["mean"] <= noise["max"] < probe["mean"] and 0 <= noise["share_exactly_zero"] <= 1
    printed = capsys.readouterr().out
    assert "| tiny | delta_kl |" in printed and "| 8b | failed: OutOfMemoryError" in printed


def test_js_helper_matches_a_numpy_formula(bench):
    from scipy.special import rel_entr

    rng = np.random.default_rng(0)
    a, b = torch.from_numpy(rng.normal(size=(5, 300))), torch.from_numpy(rng.normal(size=(5, 300)))
    p, q = torch.softmax(b, -1).numpy(), torch.softmax(a, -1).numpy()
    m = (p + q) / 2
    want = 0.5 * rel_entr(p, m).sum(-1) + 0.5 * rel_entr(q, m).sum(-1)
    np.testing.assert_allclose(bench.js(a, b, torch.float64), want, rtol=1e-12)
