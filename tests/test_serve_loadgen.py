"""The serve load generator (schedule, loopback rule, closed and open loop against a real server, gRPC), and
a perf_analyzer smoke run where that binary can run."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from rtpick.errors import RtpickError
from rtpick.serve.loadgen import Outcome, check_loopback, http_infer_body, poisson_schedule

MODEL = "rtpick_digits"


def test_poisson_schedule_is_bounded_and_near_its_rate() -> None:
    times = poisson_schedule(1000, 2.0, 100_000, seed=3)
    assert times.size and np.all(np.diff(times) >= 0) and times[-1] < 2.0
    assert 1700 < times.size < 2300  # 2000 expected; a Poisson count's sd is ~45
    assert poisson_schedule(1000, 2.0, 50).size == 50
    with pytest.raises(RtpickError):
        poisson_schedule(0, 1, 1)


def test_loopback_only() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.3.2.1"):
        check_loopback(host)
    for host in ("10.0.0.1", "example.com", "0.0.0.0"):
        with pytest.raises(RtpickError, match="loopback"):
            check_loopback(host)


def test_every_target_takes_a_url_or_host_port_and_refuses_other_hosts() -> None:
    from rtpick.serve.loadgen_wire import loopback_endpoint

    assert loopback_endpoint("127.0.0.1:9000", "http", 8000) == ("127.0.0.1", 9000)
    assert loopback_endpoint("http://localhost", "http", 8000) == ("localhost", 8000)
    assert loopback_endpoint("grpc://[::1]:9001", "grpc", 8001) == ("::1", 9001)
    with pytest.raises(RtpickError, match="loopback"):
        loopback_endpoint("10.0.0.1:8001", "grpc", 8001)


def test_body_and_summary() -> None:
    body, headers = http_infer_body({"x": np.ones((2, 3), np.float32)}, {"x": "FP32"})
    length = int(headers["Inference-Header-Content-Length"])
    assert len(body) == length + 24 and b'"binary_data_size":24' in body[:length]
    outcome = Outcome(statuses={200: 3, 503: 1}, latencies_s=[0.001, 0.002, 0.003], sent=4, wall_s=1.0)
    summary = outcome.summary(rows_per_request=2)
    assert summary["ok"] == 3 and summary["rows_per_s"] == 6 and summary["p50_ms"] == pytest.approx(2.0)
    assert Outcome().summary()["p99_ms"] is None


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("starlette")
    pytest.importorskip("tritonclient.grpc")
    from serve_fixtures import free_port, running_server

    from rtpick.serve.server import ServeOptions

    options = ServeOptions(port=free_port(), grpc_port=free_port(), max_batch=8, max_queue_size=256, timeout_ms=0,
                           exit_timeout_s=5)
    with running_server(options) as served:
        yield served, options


def test_closed_and_open_loop_against_a_server(server) -> None:
    from rtpick.serve.loadgen import GrpcTarget, HttpTarget, run_closed, run_open

    served, options = server
    x = np.zeros((1, 1, 32, 32), np.float32)
    http = HttpTarget(f"http://127.0.0.1:{options.port}", MODEL, {"image": x}, {"image": "FP32"})
    closed = run_closed(http, 2, max_requests=50, duration_s=10)
    assert closed.statuses == {200: 50} and len(closed.latencies_s) == 50
    opened = run_open(http, 200, duration_s=0.5, max_requests=200, connections=8)
    assert opened.sent > 0 and opened.statuses.get(200) == opened.sent
    grpc = GrpcTarget(f"grpc://127.0.0.1:{options.grpc_port}", MODEL, {"image": x}, {"image": "FP32"})
    assert run_closed(grpc, 2, max_requests=20, duration_s=10).statuses == {200: 20}
    json_target = HttpTarget(f"127.0.0.1:{options.port}", MODEL, {"image": x}, {"image": "FP32"}, binary=False)
    assert run_closed(json_target, 1, max_requests=5, duration_s=10).statuses == {200: 5}


def _perf_analyzer_reason() -> str | None:
    binary = shutil.which("perf_analyzer")
    if binary is None:
        return "perf_analyzer is not installed (the perf-analyzer wheel needs glibc 2.38; this host has older)"
    try:
        subprocess.run([binary, "--help"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"perf_analyzer cannot run here: {exc}"
    return None


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_perf_analyzer_smoke(server, protocol) -> None:
    reason = _perf_analyzer_reason()
    if reason:
        pytest.skip(reason)
    _, options = server
    url = f"127.0.0.1:{options.port if protocol == 'http' else options.grpc_port}"
    result = subprocess.run([shutil.which("perf_analyzer"), "-m", MODEL, "-u", url, "-i", protocol,
                             "--concurrency-range", "1:2", "--measurement-interval", "500", "--shape",
                             "image:1,32,32"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Concurrency: 2" in result.stdout


def test_open_loop_stops_when_the_client_falls_behind() -> None:
    import asyncio
    import time

    from rtpick.serve.loadgen import run_open

    class SlowConnection:
        async def send(self, raw: object) -> tuple[int, bytes]:
            await asyncio.sleep(0.05)
            return 200, b""

        async def close(self) -> None:
            return None

    class SlowTarget:
        raw = b""

        def connection(self) -> SlowConnection:
            return SlowConnection()

    began = time.monotonic()
    outcome = run_open(SlowTarget(), 1000, duration_s=0.2, connections=1, grace_s=1)
    assert time.monotonic() - began < 10  # bounded: ~0.2 s schedule + 1 s slack + one send
    assert outcome.not_sent > 0 and outcome.sent + outcome.not_sent > 100
    assert outcome.missed_schedule > 0 and outcome.statuses == {200: outcome.sent}
