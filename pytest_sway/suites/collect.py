"""Collecting a built-in battery as ordinary pytest items (the plugin's ``pytest_collection_modifyitems``
calls :func:`battery_items` before ``-k`` and ``-m`` deselect, so they apply to it as to any test)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest

from .spec import Suite, threshold

#: Each suite's test module (inside the package, so it ships with it) and the nodeid folder it shows under.
MODULES = {"default": "pytest_sway.suites.default.battery"}


def battery_items(session: pytest.Session, suite: Suite, overrides: dict[str, float] | None,
                  parse: Callable[[pytest.Item], None]) -> list:  # fmt: skip
    """The items of ``suite``'s selected parts, gates set from ``overrides``; ``parse`` (the plugin's
    marker check) runs again on each item whose gate changed."""
    battery = importlib.import_module(MODULES[suite.name])
    path = Path(battery.__file__ or "")
    module = pytest.Module.from_parent(session, path=path, nodeid=f"sway-{suite.name}/{path.name}")
    out: list[pytest.Item | pytest.Collector] = []
    for item in module.collect():
        assert isinstance(item, pytest.Item), item
        name = getattr(item, "originalname", item.name)
        part = battery.PARTS[name]
        if part not in suite.parts:
            continue
        if battery.GATED[part] == name and overrides and part in overrides:
            keyword, value = threshold(part, overrides)
            for i, mark in enumerate(item.own_markers):
                if mark.name == "sway_probe":
                    item.own_markers[i] = getattr(pytest.mark, mark.name)(
                        *mark.args, **{**mark.kwargs, keyword: value}
                    ).mark
            parse(item)
        out.append(item)
    # What a collected file reports: the terminal's "collected N items" counts them.
    session.ihook.pytest_collectreport(report=pytest.CollectReport(module.nodeid, "passed", None, out))
    return out
