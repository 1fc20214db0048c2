"""The whole pod's exposition: every sample gets its container, families of the same
name are declared once, a family whose type disagrees is left out, and the result parses."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeops_http_api.scrape import merge, render


def exposition(value: float, reason: str) -> str:
    registry = CollectorRegistry()
    Counter("beats_total", "Beats", registry=registry).inc(value)
    Counter("errors_total", "Errors", ["reason"], registry=registry).labels(reason).inc()
    Gauge("idle", "Unobserved labelled gauge", ["x"], registry=registry)
    return generate_latest(registry).decode()


def test_merged_exposition_parses_with_a_container_per_sample() -> None:
    parts = {"registrar": exposition(3, 'a "quoted", {braced} reason'),
             "tunnel": exposition(5, "plain")}
    parts["gateway"] = "# HELP beats_total Beats\n# TYPE beats_total gauge\nbeats_total 9\n"
    text = render(merge(parts), {"registrar": True, "tunnel": True, "gateway": True,
                                 "http-api": False}).decode()
    assert text.count("# TYPE beats_total ") == 1
    assert text.count("# TYPE idle ") == 1
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("beats_total", (("container", "registrar"),))] == 3
    assert samples[("beats_total", (("container", "tunnel"),))] == 5
    assert ("beats_total", (("container", "gateway"),)) not in samples  # type disagrees
    assert samples[("errors_total", (("container", "registrar"),
                                     ("reason", 'a "quoted", {braced} reason')))] == 1
    assert samples[("errors_total", (("container", "tunnel"), ("reason", "plain")))] == 1
    assert samples[("pipeops_container_up", (("container", "http-api"),))] == 0
    assert samples[("pipeops_container_up", (("container", "gateway"),))] == 1
    assert len(samples) == len(set(samples))
