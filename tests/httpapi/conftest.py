"""One whole pod per test module (real processes); tests that need a sibling down start
a further http-api that points at a port where that sibling does not listen."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser import browser, page  # noqa: F401 (fixtures)
from tests.httpapi.pod import Pod


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    running = Pod(tmp_path_factory.mktemp("pod")).start()
    yield running
    running.stop()
