"""``GET /metrics``: Triton's ``nv_inference_*`` families (same names, same labels) plus rtpick's histograms.

Why written by hand rather than as prometheus-client counters: Triton's counters carry no ``_total`` suffix, which
prometheus-client's `Counter` always adds, and dashboards built for Triton query the bare names. The figures
themselves live in `ServedModel.counters` (one lock, read at scrape time), so the request path pays for no
metric objects; the two histograms are ordinary prometheus-client histograms.
"""

from __future__ import annotations

from typing import Any

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    """A registry of its own (several servers in one test process never share counters)."""

    def __init__(self, max_batch: int) -> None:
        from prometheus_client import CollectorRegistry, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.served: Any = None
        self.latency = Histogram("rtpick_request_latency_seconds", "Inference request latency, arrival at the "
                                 "server to outputs ready, in seconds (admitted requests, ok or dropped late).",
                                 ["model", "version", "status"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, max_batch} & set(range(1, max_batch + 1)))
        self.batch_size = Histogram("rtpick_batch_size", "Rows per batch the scheduler ran.", ["model", "version"],
                                    buckets=[float(s) for s in sizes], registry=self.registry)

    def attach(self, served: Any) -> None:
        self.served = served
        served.observe = self
        self._ok = self.latency.labels(served.name, served.version, "ok")
        self._late = self.latency.labels(served.name, served.version, "late")
        self._batch = self.batch_size.labels(served.name, served.version)

    def request(self, latency_s: float, ok: bool) -> None:
        (self._ok if ok else self._late).observe(latency_s)

    def batch(self, rows: int) -> None:
        self._batch.observe(rows)

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        triton = triton_text(self.served) if self.served is not None else b""
        return triton + generate_latest(self.registry), CONTENT_TYPE_LATEST


def _label_text(labels: dict[str, str]) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return ",".join(f'{k}="{escape(str(v))}"' for k, v in labels.items())


def triton_text(served: Any) -> bytes:
    """The ``nv_inference_*`` families in Prometheus text format, with Triton's bare counter names."""
    c = served.counters
    labels = {"model": served.name, "version": served.version}
    with c.lock:
        figures = [
            ("nv_inference_request_success", "counter", "Successful inference requests", c.success),
            ("nv_inference_count", "counter", "Inferences performed (rows; a batch of n counts n)", c.inferences),
            ("nv_inference_exec_count", "counter", "Model executions (batches)", c.executions),
            ("nv_inference_request_duration_us", "counter", "Cumulative request duration of successful requests "
             "(us)", c.request_ns // 1000),
            ("nv_inference_queue_duration_us", "counter", "Cumulative time requests waited in the queue (us)",
             c.queue_ns // 1000),
            ("nv_inference_compute_infer_duration_us", "counter", "Cumulative compute time of successful requests "
             "(us)", c.compute_ns // 1000),
        ]
        failures = dict(c.failure)
    figures.append(("nv_inference_pending_request_count", "gauge", "Requests waiting in the queue",
                    served.pending()))
    lines = []
    base = _label_text(labels)
    for name, kind, text, value in figures:
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name}{{{base}}} {value}"]
    lines += ["# HELP nv_inference_request_failure Failed or refused inference requests, by reason (queue_full, "
              "predicted_late, deadline, draining, too_large, invalid, backend)",
              "# TYPE nv_inference_request_failure counter"]
    lines += [f"nv_inference_request_failure{{{_label_text({**labels, 'reason': r})}}} {v}"
              for r, v in failures.items()]
    return ("\n".join(lines) + "\n").encode()
