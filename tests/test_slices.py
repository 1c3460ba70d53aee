"""Slices (named subsets of items, gated each) and groups (the cluster bootstrap)."""

import json
import math

import numpy as np
import pytest

from pytest_sway import DummyBackend, Sway, bootstrap_ci, run_probe
from pytest_sway.errors import ProbeParamError
from pytest_sway.reports.baseline import compare
from pytest_sway.reports.rows import result_row
from pytest_sway.stats.bootstrap import Bootstrap, batch_intervals, check_groups
from pytest_sway.stats.gate import Gate
from pytest_sway.stats.outcome import Outcome
from pytest_sway.stats.slices import slice_seed

BILLING = [f"Why was I billed twice for invoice {i}?" for i in range(6)]
REFUNDS = [f"How do I get a refund for order {i}?" for i in range(5)]
GENERAL = [f"The capital of country {i} is" for i in range(7)]
SLICES = {"billing": BILLING, "refunds": REFUNDS, "general": GENERAL}


# -- the cluster bootstrap ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["studentized", "bca", "percentile"])
def test_groups_of_one_are_the_item_bootstrap(method):
    values = np.random.default_rng(1).lognormal(0.0, 1.0, 30)
    plain = bootstrap_ci(values, method=method, seed=4)
    clustered = bootstrap_ci(values, method=method, seed=4, groups=list(range(30)))
    np.testing.assert_allclose(clustered, plain, rtol=1e-12)
    # None labels are groups of their own.
    np.testing.assert_allclose(bootstrap_ci(values, method=method, seed=4, groups=[None] * 30), plain, rtol=1e-12)


@pytest.mark.parametrize("method", ["studentized", "bca", "percentile"])
def test_copies_of_one_value_count_once_per_group(method):
    """Each of 15 values repeated 4 times, grouped: the cluster bootstrap sees 15 values, not 60.
    (Equal groups of equal values: the ratio, its cluster-robust SE and the leave-one-group-out
    estimates are exactly those of the 15 values, and the draws are the same. With fewer values,
    resamples that are permutations of the sample tie with its mean up to rounding, and BCa's
    bias count would differ in the last bits.)"""
    values = np.random.default_rng(2).exponential(1.0, 15)
    copies = np.repeat(values, 4)
    grouped = bootstrap_ci(copies, method=method, seed=9, groups=np.repeat(np.arange(15), 4).tolist())
    np.testing.assert_allclose(grouped, bootstrap_ci(values, method=method, seed=9), rtol=1e-10)
    # Resampled one by one, the copies pass for 60 independent values: a far narrower interval.
    assert bootstrap_ci(copies, method=method, seed=9).width < 0.7 * grouped.width


def _brute_force(values, labels, *, resamples, seed, confidence):
    """The cluster bootstrap written out resample by resample: draw groups (the same draws as
    stats.py: one chunk from the seed's first child), pool their items, take the mean, and the
    cluster-robust SE from the pooled groups' residual totals."""
    names = list(dict.fromkeys(labels))
    members = [values[[i for i, label in enumerate(labels) if label == name]] for name in names]
    g = len(members)
    child = np.random.SeedSequence(seed).spawn(1)[0]
    picks = np.random.default_rng(child).integers(0, g, size=(1, resamples, g), dtype=np.uint16)[0]

    def mean_and_se(drawn):
        pooled = np.concatenate(drawn)
        mean = pooled.mean()
        residuals = [group.sum() - mean * group.size for group in drawn]
        return mean, math.sqrt(g / (g - 1) * sum(r * r for r in residuals)) / pooled.size

    mean, se = mean_and_se(members)
    means, ts = [], []
    for row in picks:
        m, s = mean_and_se([members[j] for j in row])
        means.append(m)
        ts.append((m - mean) / s)
    alpha = 1 - confidence
    # Whole ranks here (1000 * 0.05): rounded, since 1 - 0.9 is 0.09999999999999998 in floating point.
    lo_rank, hi_rank = round((resamples + 1) * alpha / 2), round((resamples + 1) * (1 - alpha / 2))
    means, ts = sorted(means), sorted(ts)
    percentile = (means[lo_rank - 1], means[hi_rank - 1])
    studentized = (mean - ts[hi_rank - 1] * se, mean - ts[lo_rank - 1] * se)
    return studentized, percentile


def test_cluster_bootstrap_agrees_with_a_brute_force_loop():
    rng = np.random.default_rng(5)
    labels = ["a"] * 3 + ["b"] * 1 + ["c"] * 5 + ["d"] * 2 + ["e"] * 4 + ["f"] * 3 + ["g"] * 2  # unequal sizes
    labels = [labels[i] for i in rng.permutation(len(labels))]  # groups interleaved, not contiguous
    values = rng.lognormal(0.0, 1.0, len(labels))
    studentized, percentile = _brute_force(values, labels, resamples=999, seed=11, confidence=0.9)
    codes = check_groups(labels, len(labels))
    for method, expected in (("studentized", studentized), ("percentile", percentile)):
        got = batch_intervals(values[None], confidence=0.9, resamples=999, methods=(method,), seed=11, groups=codes)
        np.testing.assert_allclose(got[method][0], expected, rtol=1e-10)
        # Unequal groups: bootstrap_ci widens it to the CR2 t interval where that is wider, never narrows it.
        ci = bootstrap_ci(values, method=method, resamples=999, seed=11, confidence=0.9, groups=labels)
        assert ci.low <= expected[0] and ci.high >= expected[1]


def test_bca_jackknife_leaves_out_whole_groups():
    """BCa's acceleration from leave-one-group-out means, written out, gives the same levels."""
    from scipy.special import ndtr, ndtri

    rng = np.random.default_rng(6)
    labels = np.repeat(np.arange(6), [2, 4, 1, 3, 3, 2])
    values = rng.exponential(1.0, labels.size)
    codes = check_groups(labels.tolist(), labels.size)
    got = batch_intervals(values[None], confidence=0.9, resamples=1999, methods=("bca",), seed=3, groups=codes)["bca"]
    percentile = batch_intervals(
        values[None], confidence=0.9, resamples=1999, methods=("percentile",), seed=3, groups=codes
    )["percentile"]
    # Recover the bootstrap means from the percentile run's draws by brute force, then BCa by the book.
    child = np.random.SeedSequence(3).spawn(1)[0]
    picks = np.random.default_rng(child).integers(0, 6, size=(1, 1999, 6), dtype=np.uint16)[0]
    members = [values[labels == k] for k in range(6)]
    boot = np.array([np.concatenate([members[j] for j in row]).mean() for row in picks])
    mean = values.mean()
    loo = np.array([values[labels != k].mean() for k in range(6)])
    dev = loo.mean() - loo
    accel = (dev**3).sum() / (6 * (dev**2).sum() ** 1.5)
    tie = np.isclose(boot, mean, rtol=1e-12, atol=0)  # permutations of the groups: the mean up to rounding
    z0 = ndtri((((boot < mean) & ~tie).sum() + 0.5 * tie.sum()) / boot.size)
    z = ndtri(np.array([0.05, 0.95]))
    levels = ndtr(z0 + (z0 + z) / (1 - accel * (z0 + z)))
    ranks = [math.floor(2000 * levels[0]), math.ceil(2000 * levels[1])]
    ordered = np.sort(boot)
    np.testing.assert_allclose(got[0], [ordered[ranks[0] - 1], ordered[ranks[1] - 1]], rtol=1e-10)
    np.testing.assert_allclose(percentile[0], [ordered[99], ordered[1899]], rtol=1e-10)


@pytest.mark.parametrize(
    "groups, message",
    [
        ([0, 0, 1, 1, 2, 2, 3, 3], "4 group(s) among 8 items; a cluster bootstrap needs at least 5"),
        ([0, 1, 2], "3 group label(s) for 8 items"),
        ([0, 1, 2, 3, 4, 5, 6, 1.5], "label 7 is 1.5; a group label is a string or an integer"),
        ("abcdefgh", "expected a list of group labels"),
    ],
)
def test_bad_groups_are_refused_naming_the_problem(groups, message):
    with pytest.raises(ValueError, match=r"^groups: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        bootstrap_ci(np.arange(8.0), groups=groups)


# -- slices through run_probe, the sway fixture's object, and markers' validation ---------


def test_slice_estimates_are_the_means_of_their_items_and_the_overall_is_unchanged():
    backend = DummyBackend()
    sliced = run_probe("delta_kl", backend, prompts=SLICES, seed=7)
    flat = run_probe("delta_kl", backend, prompts=BILLING + REFUNDS + GENERAL, seed=7)
    np.testing.assert_array_equal(sliced.values, flat.values)
    assert (sliced.estimate, sliced.ci, sliced.n) == (flat.estimate, flat.ci, flat.n)
    assert list(sliced.slices) == ["billing", "refunds", "general"]
    start = 0
    for name, prompts in SLICES.items():
        part = flat.values[start : start + len(prompts)]
        start += len(prompts)
        s = sliced.slices[name]
        assert s.n == len(prompts) and s.estimate == pytest.approx(part.mean(), rel=1e-15)
        # Its interval: the bootstrap of its own values, seeded from the test's seed and its name.
        assert s.seed == slice_seed(7, name) and s.ci == bootstrap_ci(part, seed=slice_seed(7, name))


def test_a_slice_gets_the_same_interval_whatever_the_other_slices():
    backend = DummyBackend()
    three = run_probe("delta_kl", backend, prompts=SLICES, seed=7)
    one = run_probe("delta_kl", backend, prompts={"refunds": REFUNDS, "other": BILLING}, seed=7)
    assert one.slices["refunds"].ci == three.slices["refunds"].ci
    assert slice_seed(7, "refunds") != slice_seed(7, "billing") != slice_seed(8, "billing")


def test_the_gate_judges_every_slice_and_names_the_failing_ones():
    result = Sway(DummyBackend(), seed=3).delta_kl(SLICES)
    overall_low = result.ci.low
    worst = min(result.slices.values(), key=lambda s: s.ci.low)
    # A threshold the overall interval clears but one slice's does not.
    threshold = (overall_low + worst.ci.low) / 2
    assert worst.ci.low < threshold < overall_low
    verdict = result.check(Gate(above=threshold))
    failing = [name for name, v in verdict.slices if not v.ok]
    assert worst.name in failing and not verdict.ok
    head = verdict.message.splitlines()[0]
    assert head.startswith(("FAILED: delta_kl(js) fails its gate on", "INCONCLUSIVE: delta_kl(js) fails its gate on"))
    assert f"{len(failing)} of 3 slices" in head and repr(worst.name) in head and "overall" not in head
    assert f"delta_kl(js) slice {worst.name!r}" in verdict.message
    with pytest.raises(AssertionError, match=f"slice {worst.name!r}"):
        result.assert_above(threshold)
    # Rows carry each slice's outcome, and count the gates judged: overall + 3 slices, per check.
    row = result_row(result, nodeid="t", index=0, order=1, source="fixture")
    assert row["gates"] == 2 * 4
    assert {name: part["outcome"] for name, part in row["slices"].items()} == {
        name: (Outcome.PASSED.value if name not in failing else dict(verdict.slices)[name].outcome.value)
        for name in SLICES
    }
    assert json.loads(json.dumps(row["slices"]))  # plain builtins only


def test_a_passing_gate_passes_every_slice():
    result = Sway(DummyBackend(), seed=3).delta_kl(SLICES)
    lowest = min(min(s.ci.low for s in result.slices.values()), result.ci.low)
    verdict = result.check(Gate(above=lowest - 1e-9))
    assert verdict.ok and [v.outcome for _, v in verdict.slices] == [Outcome.PASSED] * 3


@pytest.mark.parametrize(
    "prompts, extra, message",
    [
        ({"billing": BILLING, "refunds": []}, {}, "slice 'refunds' has 0 item(s)"),
        ({"billing": BILLING, "refunds": REFUNDS[:1]}, {}, "slice 'refunds' has 1 item(s)"),
        ({"": BILLING, "refunds": REFUNDS}, {}, "slice name is ''; a slice label must not be blank"),
        ({1.5: BILLING, "refunds": REFUNDS}, {}, "slice name is 1.5; a slice label is a string or an integer"),
        (
            {"billing": "billing.jsonl", "refunds": REFUNDS},
            {},
            "slice 'billing' is 'billing.jsonl'; each slice is a list",
        ),
        ({}, {}, "an empty mapping of slices"),
        (
            {"billing": BILLING, "refunds": REFUNDS + BILLING[2:3]},
            {},
            "slice 'refunds' item 5 repeats slice 'billing' item 2",
        ),
        ({"billing": BILLING, "refunds": REFUNDS}, {"groups": [0, 1]}, "2 label(s) for 11 items"),
        (
            {"billing": BILLING, "refunds": REFUNDS},
            {"groups": [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5]},
            "slice 'billing': groups: 3 group(s) among 6 items",
        ),
    ],
)
def test_bad_slices_are_refused_naming_the_slice(prompts, extra, message):
    with pytest.raises(ProbeParamError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_probe("delta_kl", DummyBackend(), prompts=prompts, **extra)


def test_groups_work_for_every_probe_with_a_bootstrap_and_are_refused_for_closed_forms():
    sway = Sway(DummyBackend())
    groups = [i // 2 for i in range(12)]
    prompts = [f"Ticket {i}: where is my parcel?" for i in range(12)]
    assert sway.delta_kl(prompts, groups=groups).n_groups == 6
    assert sway.completion_lift([(p, " It ships today.") for p in prompts], groups=groups).n_groups == 6
    assert sway.perplexity_shift([p + " It ships today." for p in prompts], groups=groups).n_groups == 6
    assert sway.adapter_ablation(prompts, groups=groups).n_groups == 6
    # 0/1 outcomes in groups: betting on the group means (or the all-equal bound over 6 groups).
    changed = sway.greedy_change(prompts, groups=groups)
    assert changed.n_groups == 6 and changed.method in ("betting", "all-equal")
    with pytest.raises(ProbeParamError, match="assumes independent items, and has no cluster version"):
        sway.choice_accuracy([(p, [" yes", " no"], 0) for p in prompts], groups=groups)


def test_grouped_intervals_resample_groups_overall_and_per_slice():
    values_of = run_probe("delta_kl", DummyBackend(), prompts=BILLING + REFUNDS + GENERAL).values
    groups = [0, 0, 1, 2, 3, 4] + [5, 6, 7, 8, 9] + [10, 10, 11, 12, 13, 14, 14]  # 5 groups in each slice
    result = run_probe("delta_kl", DummyBackend(), prompts=SLICES, groups=groups, seed=2)
    assert result.n_groups == 15 and result.groups == tuple(map(str, groups))  # labels are text
    assert result.ci == bootstrap_ci(values_of, seed=2, support=(0, math.log(2)), groups=groups)
    for (name, s), (lo, hi) in zip(result.slices.items(), [(0, 6), (6, 11), (11, 18)]):
        assert s.n_groups == len(set(groups[lo:hi]))
        expected = bootstrap_ci(
            values_of[lo:hi], seed=slice_seed(2, name), groups=groups[lo:hi], support=(0, math.log(2))
        )
        assert s.ci == expected
    assert "resampling 15 groups" in result.describe()


def test_jsonl_group_and_slice_fields_are_wired_through(tmp_path):
    lines = [{"prompt": f"Ticket {i}", "slice": "billing" if i < 10 else "refunds", "group": i // 2} for i in range(20)]
    lines[19].pop("group")  # a line without a group is a group of its own
    (tmp_path / "tickets.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    sway = Sway(DummyBackend(), base_dir=tmp_path, seed=1)
    result = sway.delta_kl("tickets.jsonl")
    assert list(result.slices) == ["billing", "refunds"] and result.n_groups == 11
    assert (result.slices["billing"].n, result.slices["billing"].n_groups) == (10, 5)
    assert (result.slices["refunds"].n, result.slices["refunds"].n_groups) == (10, 6)
    inline = sway.delta_kl(
        {"billing": [f"Ticket {i}" for i in range(10)], "refunds": [f"Ticket {i}" for i in range(10, 20)]},
        groups=[i // 2 for i in range(19)] + [None],
    )
    assert inline.ci == result.ci and inline.slices["refunds"].ci == result.slices["refunds"].ci
    with pytest.raises(ProbeParamError, match="groups= and the items file 'tickets.jsonl' both give groups"):
        sway.delta_kl("tickets.jsonl", groups=list(range(20)))
    (tmp_path / "lonely.jsonl").write_text(
        "\n".join(json.dumps({"prompt": f"T{i}", **({"slice": "solo"} if i == 0 else {})}) for i in range(6))
    )
    with pytest.raises(ProbeParamError, match="slice 'solo' has 1 item"):
        sway.delta_kl("lonely.jsonl")


def test_baseline_comparison_of_grouped_items_resamples_groups():
    groups = [i // 2 for i in range(12)]
    prompts = [f"Ticket {i}" for i in range(12)]
    result = run_probe("delta_kl", DummyBackend(), prompts=prompts, groups=groups, seed=5)
    saved = {"items": list(result.items), "values": [v - 0.01 * (i % 3) for i, v in enumerate(result.values)]}
    saved["estimate"] = float(np.mean(saved["values"]))
    bootstrap = Bootstrap(seed=5)
    out = compare(
        result, saved, provenance_now={}, provenance_then={}, bootstrap=bootstrap, max_regression=None, direction=None
    )
    diffs = result.values - np.array(saved["values"])
    expected = bootstrap_ci(diffs, seed=5, groups=groups)
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(tuple(expected), rel=1e-12)
    assert (out["ci_low"], out["ci_high"]) != pytest.approx(tuple(bootstrap_ci(diffs, seed=5)), rel=1e-6)


# -- through pytest: summary, JSON, JUnit, Bonferroni ----------------------------------------

SUITE = f"""
import pytest
SLICES = {SLICES!r}
PROMPTS = [f"Ticket {{i}}: where is my parcel?" for i in range(12)]

@pytest.mark.sway_probe("delta_kl", prompts=SLICES, above=0.0)
def test_sliced(sway_result):
    assert list(sway_result.slices) == ["billing", "refunds", "general"]

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS, groups=[i // 2 for i in range(12)], below=0.5)
def test_grouped():
    pass

@pytest.mark.sway_gates(3)
def test_body(sway):
    sway.delta_kl({{"a": PROMPTS[:6], "b": PROMPTS[6:]}}).assert_above(0.0)
"""


def test_slices_and_groups_in_the_summary_json_and_junit(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider", "--sway-json=out.json", "--junitxml=junit.xml")
    result.assert_outcomes(passed=3)
    doc = json.loads((pytester.path / "out.json").read_text())
    sliced, grouped, body = doc["results"]
    assert list(sliced["slices"]) == ["billing", "refunds", "general"]
    billing = sliced["slices"]["billing"]
    keys = {"n", "n_groups", "estimate", "ci_low", "ci_high", "outcome", "items_needed", "ci_method", "seed"}
    assert set(billing) == keys
    assert billing["n_groups"] is None
    assert billing["n"] == 6 and billing["outcome"] == "passed"
    assert billing["estimate"] == pytest.approx(np.mean(sliced["values"][:6]), rel=1e-12)
    assert grouped["n"] == 12 and grouped["n_groups"] == 6 and grouped["slices"] == {}
    assert list(body["slices"]) == ["a", "b"]
    result.stdout.fnmatch_lines(
        [
            "test_sliced * delta_kl(js) * 18 * passed",
            "  slice billing * 6 * >= 0 * passed",
            "  slice refunds * 5 * >= 0 * passed",
            "  slice general * 7 * >= 0 * passed",
            "test_grouped * delta_kl(js) * 12 (6 groups) * <= 0.5 * passed",
            "test_body * delta_kl(js) * 12 * passed",
            "  slice a * 6 * passed",
        ]
    )
    junit = (pytester.path / "junit.xml").read_text()
    assert 'name="sway.n_groups" value="6"' in junit and 'name="sway.slices"' in junit


def test_bonferroni_counts_every_gated_slice(pytester):
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("-p", "no:cacheprovider", "--sway-json=out.json", "--sway-correction=bonferroni")
    result.assert_outcomes(passed=3)
    doc = json.loads((pytester.path / "out.json").read_text())
    # sliced marker: overall + 3 slices; grouped marker: 1; the body declared 3 (overall + 2 slices).
    assert doc["correction"] == {"method": "bonferroni", "m": 8}
    assert all(r["confidence"] == pytest.approx(1 - 0.05 / 8) for r in doc["results"])


def test_a_sliced_body_gate_beyond_its_declaration_fails_under_bonferroni(pytester):
    pytester.makepyfile(SUITE.replace("@pytest.mark.sway_gates(3)\n", ""))
    result = pytester.runpytest("-p", "no:cacheprovider", "--sway-correction=bonferroni")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_body judged 3 gates in its body*add @pytest.mark.sway_gates(3)*"])


def test_a_failing_slice_fails_the_test_by_name(pytester):
    pytester.makepyfile(
        """
import pytest
BIG = [f"Refund request {i}" for i in range(8)]
SMALL = [f"Billing question {i}" for i in range(8)]

@pytest.mark.sway_probe("delta_kl", prompts={"refunds": BIG, "billing": SMALL}, above=0.02)
def test_moves():
    pass
"""
    )
    pytester.makeconftest(
        """
import numpy as np
import pytest
from pytest_sway import DummyBackend


class Backend(DummyBackend):
    def divergences(self, prompts, **kwargs):
        # Refund prompts move; billing prompts do not.
        return np.array([0.2 + 0.001 * i if p.startswith("Refund") else 0.001 * i for i, p in enumerate(prompts)])


def pytest_sway_make_backend(settings):
    return Backend()
"""
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "FAILED: delta_kl(js) fails its gate on 1 of 2 slices: 'billing' (failed).",
            "FAILED: delta_kl(js) slice 'billing' 95% CI * lies wholly below 0.02.",
        ]
    )
    result.stdout.fnmatch_lines(["  slice refunds * passed", "  slice billing * FAILED"])
