"""Fixtures of the chart tests: helm isolated in a session folder, one render per values set."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chart.chart import VALUE_SETS, Chart, Rendered


@pytest.fixture(scope="session")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Chart:
    return Chart(tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def render(chart: Chart) -> Callable[[str], Rendered]:
    """`render(name)`: the chart rendered with VALUE_SETS[name], once per session."""
    cache: dict[str, Rendered] = {}

    def get(name: str) -> Rendered:
        if name not in cache:
            cache[name] = chart.template(*VALUE_SETS[name])
        return cache[name]

    return get


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest, render: Callable[[str], Rendered]) -> Rendered:
    """The chart rendered with each values set in turn."""
    return render(request.param)
