"""The registrar's identity keeper when the volume refuses a write (full, too large, an
I/O error): nothing is raised, the identity it holds moves on, the file keeps the old
identity whole, the failure is reported once, and the next check writes it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from agentkit.events import EventBus
from agentkit.identity import Identity, IdentityFile
from agentkit.status import ServiceStatus
from pipeops_registrar import metrics
from pipeops_registrar.keeper import IdentityKeeper


class FailingFile(IdentityFile):
    """The state file with a switch: while ``error`` is set, every write fails with it."""

    error: int | None = None

    def write(self, identity: Identity) -> None:
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        super().write(identity)


OLD = Identity(agent_id="a", cluster_id="c", cluster_token="old", state="registered")
NEW = OLD.evolve(cluster_token="new")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EIO])
async def test_a_failed_identity_write_keeps_the_old_file_and_is_written_later(
        tmp_path: Path, code: int, caplog: pytest.LogCaptureFixture) -> None:
    file = FailingFile(tmp_path)
    status = ServiceStatus("registrar", "test", EventBus("registrar"))
    keeper = IdentityKeeper(file, None, status)
    await keeper.update(OLD)
    on_disk = (tmp_path / "identity.json").read_bytes()
    failures = metrics.IDENTITY_WRITE_FAILURES.labels(os.strerror(code))._value.get()
    file.error = code
    await keeper.update(NEW)  # does not raise
    await keeper.update(NEW.evolve(state="registered"))
    assert keeper.current == NEW
    assert (tmp_path / "identity.json").read_bytes() == on_disk  # old identity, whole
    assert os.listdir(tmp_path) == ["identity.json"]  # no temp file left
    assert os.strerror(code) in keeper.file_problem
    assert status.checks["identity_file"] == keeper.file_problem
    assert metrics.IDENTITY_FILE_STALE._value.get() == 1
    assert metrics.IDENTITY_WRITE_FAILURES.labels(
        os.strerror(code))._value.get() == failures + 2  # each write
    said = [r for r in caplog.records if "cannot write the identity file" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    assert not await keeper.restore_file()  # still failing: reported, not raised
    file.error = None
    assert await keeper.restore_file()  # the next check writes it
    assert file.read() == NEW
    assert keeper.file_problem == "" and status.checks["identity_file"] == "ok"
    assert metrics.IDENTITY_FILE_STALE._value.get() == 0
    assert "new" not in caplog.text and "old" not in caplog.text.replace("old file", "")
