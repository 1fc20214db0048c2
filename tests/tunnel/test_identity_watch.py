"""The tunnel's identity watch survives an identity file it cannot read: it says so once
and picks the identity up when the file becomes readable."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from agentkit.identity import IdentityFile, IdentityFollower
from tests.tunnel.agent_helpers import AGENT_ID, until, write_identity


async def test_an_unreadable_identity_file_is_waited_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agentkit.identity")
    file = IdentityFile(tmp_path)
    file.path.mkdir()  # exists, and reading it fails (IsADirectoryError), even as root
    watch = IdentityFollower(file, poll=0.01)
    task = asyncio.create_task(watch.run())
    try:
        await until(lambda: any("cannot read" in r.getMessage() for r in caplog.records),
                    what="the warning")
        assert not task.done()
        file.path.rmdir()
        write_identity(tmp_path)
        identity = await asyncio.wait_for(watch.wait_ready(), 10)
        assert identity.agent_id == AGENT_ID
        assert sum("cannot read" in r.getMessage() for r in caplog.records) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
