"""Progress of long work: the pure line (fake clock), and the plugin showing it on pytest's terminal."""

import math

import numpy as np  # noqa: F401  (imported here once: pytester's in-process runs would import new copies)
import pytest

import pytest_sway.sway  # noqa: F401
from pytest_sway.progress import ProgressLine


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def line(*, tty, delay=3.0, every=None):
    clock, written = Clock(), []
    progress = ProgressLine(lambda text, redraw: written.append((text, redraw)), tty=tty, delay=delay, every=every,
                            clock=clock)  # fmt: skip
    return progress, clock, written


def test_work_that_ends_within_the_delay_shows_nothing():
    progress, clock, written = line(tty=True)
    progress.begin("test_quick")
    for done in (0, 32, 64):
        clock.now += 0.9  # done 2.7 s after the test began
        progress.update("fine-tuned: next-token distributions", done, 64)
    assert written == []


def test_a_terminal_line_appears_after_the_delay_is_redrawn_in_place_and_ends_complete():
    progress, clock, written = line(tty=True, every=0.2)
    progress.begin("test_slow")
    progress.update("base: next-token distributions", 0, 96)
    clock.now += 2.0
    progress.update("base: next-token distributions", 32, 96)  # 2 s: nothing yet
    clock.now += 1.5
    progress.update("base: next-token distributions", 64, 96)  # 3.5 s: shown, on a line of its own
    clock.now += 0.1
    progress.update("base: next-token distributions", 80, 96)  # 0.1 s later: too soon to redraw
    clock.now += 0.1
    progress.update("base: next-token distributions", 96, 96)  # the end always shows
    assert written == [
        ("sway: test_slow: base: next-token distributions 64/96 (4 s)", False),
        ("sway: test_slow: base: next-token distributions 96/96 (4 s)", True),
    ]
    # The test has run past the delay: the next task shows from its start, on a line of its own.
    progress.update("fine-tuned: next-token distributions", 0, 96)
    clock.now += 0.5
    progress.update("fine-tuned: next-token distributions", 96, 96)
    assert written[2:] == [
        ("sway: test_slow: fine-tuned: next-token distributions 0/96 (0 s)", False),
        ("sway: test_slow: fine-tuned: next-token distributions 96/96 (0 s)", True),
    ]


def test_a_shorter_redraw_pads_over_the_longer_line_it_replaces():
    progress, _, written = line(tty=True, delay=0.0, every=0.0)
    progress.update("responses", 0, 1000)
    progress.update("responses", 1000, 1000)
    progress.update("x", 0, 10)
    progress.update("x", 5, 10)
    assert written[-1] == ("sway: x 5/10 (0 s)".ljust(len("sway: x 0/10 (0 s)")), True)
    assert written[1][0] == "sway: responses 1000/1000 (0 s)" and written[1][1] is True
    assert written[2] == ("sway: x 0/10 (0 s)", False)


def test_a_log_gets_a_new_line_at_most_every_interval_and_the_last_one():
    progress, clock, written = line(tty=False, delay=3.0, every=10.0)
    progress.begin("test_log")
    total = 100
    for done in range(0, total + 1, 5):  # a batch every 0.5 s: 10 s of work
        progress.update("fine-tuned: token log-probabilities", done, total)
        clock.now += 0.5
    texts = [text for text, redraw in written]
    assert all(redraw is False for _, redraw in written)
    # Shown first at 3 s (done=30), then 10 s later is past the end: the final line.
    assert texts == [
        "sway: test_log: fine-tuned: token log-probabilities 30/100 (3 s)",
        "sway: test_log: fine-tuned: token log-probabilities 100/100 (10 s)",
    ]


def test_the_delay_counts_from_the_start_of_the_test_not_of_each_task():
    progress, clock, written = line(tty=False, delay=3.0)
    progress.begin("test_two_tasks")
    progress.update("base: next-token distributions", 0, 8)
    clock.now += 2.5
    progress.update("base: next-token distributions", 8, 8)  # 2.5 s: quiet
    progress.update("fine-tuned: next-token distributions", 0, 8)
    clock.now += 1.0
    progress.update("fine-tuned: next-token distributions", 8, 8)  # 3.5 s into the test
    assert written == [("sway: test_two_tasks: fine-tuned: next-token distributions 8/8 (1 s)", False)]


def test_say_always_shows_on_a_line_of_its_own():
    progress, _, written = line(tty=True)
    progress.say("loading model ./base and adapter ./runs/v3")
    assert written == [("sway: loading model ./base and adapter ./runs/v3", False)]


def test_tiny_adapter_training_reports_each_step(tiny, tmp_path):
    from pytest_sway.testing import train_lora_adapter

    model, _ = tiny["gpt2"]
    steps = []
    train_lora_adapter(model, tmp_path / "adapter", ["A tiny text to learn."], steps=3, anchor_texts=(),
                       on_step=lambda step, total, loss: steps.append((step, total, loss)))  # fmt: skip
    assert [(s, t) for s, t, _ in steps] == [(1, 3), (2, 3), (3, 3)]
    assert all(math.isfinite(loss) for _, _, loss in steps)


SUITE = """
import pytest

PROMPTS = [f"The number {i} is" for i in range(12)]

@pytest.mark.sway_probe("delta_kl", prompts=PROMPTS)
def test_marker():
    print("the test's own output")

def test_body(sway):
    sway.completion_lift([(p, " seven") for p in PROMPTS[:6]])
"""


@pytest.fixture
def suite(pytester, tiny):
    model, adapter = tiny["llama"]
    pytester.makepyfile(SUITE)
    return ["-p", "no:cacheprovider", f"--sway-model={model}", f"--sway-adapter={adapter}"]


def test_loading_and_each_task_show_on_the_terminal(pytester, suite):
    result = pytester.runpytest(*suite, "--sway-progress=always")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    # In order; pytest's result letters carry on after a line (as after its own live logs).
    result.stdout.fnmatch_lines(
        [
            "sway: loading model *llama and adapter *llama-adapter",
            "sway: ready in * s: hf *llama + *llama-adapter (cpu, float32)",
            "sway: test_marker: base: next-token distributions 0/12 (0 s)",
            "sway: test_marker: base: next-token distributions 12/12 (* s)",
            "sway: test_marker: fine-tuned: next-token distributions 12/12 (* s)*",
        ]
    )
    for variant in ("base", "fine-tuned"):
        result.stdout.fnmatch_lines([f"sway: test_body: {variant}: token log-probabilities 6/6 (* s)*"])
    assert "Loading weights" not in out  # transformers' own bars are off while the backend loads
    assert "2 passed" in result.stdout.lines[-1]


def test_progress_stays_out_of_a_failing_tests_captured_output(pytester, suite):
    pytester.makepyfile(
        test_fails="def test_fails(sway):\n    print('captured text')\n    sway.delta_kl(['Hi there', 'Good day'])\n    assert False\n"
    )
    result = pytester.runpytest(*suite, "-q", "--sway-progress=always")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "sway: loading model" in out and "sway: test_fails: fine-tuned: next-token distributions 2/2" in out
    captured = out.split("Captured stdout call")[1].split("=====")[0]
    assert "captured text" in captured and "sway:" not in captured


def test_off_shows_nothing(pytester, suite):
    result = pytester.runpytest(*suite, "--sway-progress=off")
    result.assert_outcomes(passed=2)
    assert not [
        line for line in result.stdout.lines if line.startswith(("sway: loading", "sway: ready", "sway: test_"))
    ]


def test_xdist_workers_keep_their_progress_to_themselves(pytester, suite):
    result = pytester.runpytest_subprocess(*suite, "-n", "2", "--sway-progress=always")
    result.assert_outcomes(passed=2)
    assert not [
        line for line in result.stdout.lines if line.startswith(("sway: loading", "sway: ready", "sway: test_"))
    ]


def test_a_bad_progress_value_is_a_usage_error(pytester):
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--sway-progress=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--sway-progress*expected one of auto, always, off*"])
