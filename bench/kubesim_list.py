"""kubesim: a `limit=1` page costs the same on 10,000 pods as on 10, and startup is quick.

    .venv/bin/python bench/kubesim_list.py [--pods 10000] [--rounds 300]

Starts two real kubesim processes, one preloaded with 10,000 pods and one with 10, and
times (median of many requests over one keep-alive HTTPS connection):

* the reference: listing all 10 pods of the small cluster;
* `GET /api/v1/pods?limit=1` on the 10,000-pod cluster (what the registrar's heartbeat
  does), also as metadata only (`as=PartialObjectMetadataList`);
* for contrast, the full list of 10,000 pods (a few rounds only).

Results are ratios against the reference measured in the same run, written to
bench/results/kubesim.md. It also reports how long each server took to print its ready
line. Never part of the tests (tests/kubesim/test_kubesim_scale.py asserts the
`remainingItemCount` behaviour, not timings).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from kubesim.testing import Kubesim

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "kubesim.md"
META = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"


def started(pods: int) -> tuple[Kubesim, float]:
    ks = Kubesim(pods=pods)
    t0 = time.perf_counter()
    ks.start()
    return ks, time.perf_counter() - t0


def timed(ks: Kubesim, path: str, rounds: int, accept: str = "application/json") -> tuple[
        float, int, dict[str, object]]:
    """Median seconds per request, body size, and the last parsed body."""
    conn = http.client.HTTPSConnection("127.0.0.1", ks.port, context=ks.ssl_context(),
                                       timeout=60)
    headers = {"Authorization": f"Bearer {ks.token}", "Accept": accept}
    samples: list[float] = []
    body = b""
    try:
        for i in range(rounds + 3):
            t0 = time.perf_counter()
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            elapsed = time.perf_counter() - t0
            if resp.status != 200:
                raise SystemExit(f"{path}: {resp.status} {body[:300]!r}")
            if i >= 3:  # the first few warm the connection and the server up
                samples.append(elapsed)
    finally:
        conn.close()
    return statistics.median(samples), len(body), json.loads(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()

    big, big_start = started(args.pods)
    small, small_start = started(10)
    empty, empty_start = started(0)
    try:
        ref, ref_size, ref_body = timed(small, "/api/v1/pods", args.rounds)
        assert len(ref_body["items"]) == 10  # type: ignore[arg-type]
        one, one_size, one_body = timed(big, "/api/v1/pods?limit=1", args.rounds)
        meta, meta_size, meta_body = timed(big, "/api/v1/pods?limit=1", args.rounds, META)
        small_one, small_one_size, _ = timed(small, "/api/v1/pods?limit=1", args.rounds)
        full, full_size, _ = timed(big, "/api/v1/pods", max(3, args.rounds // 100))
    finally:
        for ks in (big, small, empty):
            ks.stop()

    remaining = one_body["metadata"]["remainingItemCount"]  # type: ignore[index]
    meta_remaining = meta_body["metadata"]["remainingItemCount"]  # type: ignore[index]
    if remaining != args.pods - 1 or meta_remaining != args.pods - 1:
        print(f"remainingItemCount {remaining}/{meta_remaining}, expected {args.pods - 1}",
              file=sys.stderr)
        return 1

    def row(what: str, seconds: float, size: int) -> str:
        return f"| {what} | {seconds * 1000:.2f} | {seconds / ref:.2f} | {size:,} |"

    lines = [
        "# kubesim: list cost on a large cluster",
        "",
        "Reproduce: `.venv/bin/python bench/kubesim_list.py` "
        f"(`--pods {args.pods} --rounds {args.rounds}`).",
        f"Machine: {platform.machine()}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; shared and noisy, so read the ratios.",
        "",
        f"Median of {args.rounds} requests over one keep-alive HTTPS connection "
        "(the full 10,000-pod list: fewer rounds). Ratio = time / the reference.",
        "",
        "| request | ms | ratio | body bytes |",
        "|---|---:|---:|---:|",
        row("reference: list all 10 pods (10-pod cluster)", ref, ref_size),
        row("`/api/v1/pods?limit=1`, 10-pod cluster", small_one, small_one_size),
        row(f"`/api/v1/pods?limit=1`, {args.pods:,}-pod cluster", one, one_size),
        row("same, metadata only (`as=PartialObjectMetadataList`)", meta, meta_size),
        row(f"full list of {args.pods:,} pods (contrast)", full, full_size),
        "",
        f"`remainingItemCount` on the `limit=1` page: {remaining} (JSON) and "
        f"{meta_remaining} (metadata only), expected {args.pods - 1}.",
        "",
        "A page is served from a sorted key index: O(log n + page), so the `limit=1` "
        "ratio stays near 1 whatever the cluster size.",
        "",
        "Startup (process start to the ready line, including TLS key generation):",
        "",
        "| preload | seconds |",
        "|---|---:|",
        f"| nothing (built-in namespaces) | {empty_start:.2f} |",
        f"| 10 pods | {small_start:.2f} |",
        f"| {args.pods:,} pods | {big_start:.2f} |",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
