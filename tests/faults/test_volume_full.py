"""The shared volume full: the identity write fails, the old identity stays whole, the
registrar keeps heartbeating with what it holds and says so (a log line, Describe's
``identity_file`` check and its state, ``pipeops_identity_file_stale`` and
``pipeops_identity_file_write_failures_total`` at the http-api), and writes the file as
soon as it can.

Without root there is no full filesystem to make, so the registrar's file size limit is
lowered under it (``prlimit(RLIMIT_FSIZE)``; Python ignores SIGXFSZ): every write beyond
a few bytes fails with EFBIG, exactly where a full volume fails with ENOSPC. The unit
tests in test_keeper_write_failures.py take ENOSPC and EIO too."""

from __future__ import annotations

import json
import resource

from tests.faults.pod import FaultPod
from tests.helpers import wait_for


def test_a_full_volume_keeps_the_old_identity_and_says_so(pod: FaultPod) -> None:
    registrar = pod.services["registrar"]
    assert registrar.proc is not None
    path = pod.state / "identity.json"
    before_bytes = path.read_bytes()
    before = json.loads(before_bytes)["data"]
    soft, hard = resource.prlimit(registrar.proc.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(registrar.proc.pid, resource.RLIMIT_FSIZE, (16, hard))
    try:
        # the control plane forgets the cluster: the registrar registers again and is
        # given a new cluster token, which it cannot write down
        pod.cp.forget(pod.cluster_id)
        line = registrar.wait_record(
            lambda r: "cannot write the identity file" in r.get("msg", ""), 20,
            "the write failure said")
        assert line["level"] == "warning" and "File too large" in line["msg"]
        assert "the old file is kept" in line["msg"]
        found = wait_for(lambda: (c := pod.cp.cluster(before["cluster_id"]))
                         and c["heartbeat_count"] >= 2 and c, 20,
                         what="heartbeats with the new token")
        assert found["registration_count"] == 1  # registered again (memory forgotten)
        assert found["token_sha256"] != _sha(before["cluster_token"])
        # the old identity stays, whole and valid; no temp file left behind
        assert path.read_bytes() == before_bytes
        assert [p.name for p in pod.state.iterdir() if p.name.startswith(".identity")] == []
        described = wait_for(lambda: (d := pod.describe("registrar"))
                             and d["state"] == "SERVICE_STATE_DEGRADED" and d, 10,
                             what="the registrar degraded")
        assert "cannot write" in described["checks"]["identity_file"]
        assert "File too large" in described["detail"]
        assert pod.api.metric("pipeops_identity_file_stale", container="registrar") == 1
        assert pod.api.metric("pipeops_identity_file_write_failures_total",
                              container="registrar") >= 1
        assert registrar.proc.poll() is None  # it keeps going
        assert len([r for r in registrar.records()
                    if "cannot write the identity file" in r.get("msg", "")]) == 1
    finally:
        resource.prlimit(registrar.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))
    # room again: written within a heartbeat interval or two, and the siblings follow
    after = wait_for(lambda: (d := pod.identity_now())["cluster_token"]
                     != before["cluster_token"] and d, 10, what="the new identity written")
    assert after["cluster_id"] == before["cluster_id"] and after["agent_id"] == before["agent_id"]
    registrar.wait_record(lambda r: r.get("msg") == "writing the identity file recovered",
                          10, "the recovery said")
    pod.wait_settled(30)
    assert pod.api.metric("pipeops_identity_file_stale", container="registrar") == 0
    assert pod.describe("registrar")["checks"]["identity_file"] == "ok"


def _sha(secret: str) -> str:
    import hashlib

    return hashlib.sha256(secret.encode()).hexdigest()[:16]
