"""The README's library example runs as written and prints what it says."""

import re
from pathlib import Path

import pytest

README = (Path(__file__).parent.parent / "README.md").read_text()


def _block_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_library_example(capsys):
    code = _block_after("## The library without pytest")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    comment = re.search(r"print\(result\)\s+# (.*)", code).group(1)
    pattern = re.escape(comment).replace(r"\.\.\.", ".*")
    assert re.fullmatch(pattern, printed.strip()), (comment, printed)
    assert len(namespace["result"].values) == 32


def test_the_inconclusive_message_shown_is_the_one_produced():
    from pytest_sway import DummyBackend, Sway

    result = Sway(DummyBackend(), seed=3).delta_kl([f"a{i}" for i in range(10)])
    with pytest.raises(AssertionError) as failure:
        result.assert_above(0.03)
    assert str(failure.value) in README
