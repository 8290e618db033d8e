"""`rtpick serve` under abuse: malformed bodies (fuzz), a full queue, deadlines, huge bodies, SIGTERM drain.

Every answer must be JSON ``{"error": ...}`` with the right status, every refusal counted in /metrics by reason,
and the server must still answer `live` afterwards. Loops are bounded in count and time; servers are always
stopped (fixture / finally).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("tritonclient.http")

import tritonclient.http as httpclient  # noqa: E402
from conftest import SRC  # noqa: E402
from serve_fixtures import free_port, running_server  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from rtpick.serve.loadgen import HttpTarget, run_closed  # noqa: E402
from rtpick.serve.server import ServeOptions  # noqa: E402

MODEL = "rtpick_digits"
PATH = f"/v2/models/{MODEL}/infer"


def request(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def failures(port: int) -> dict[str, float]:
    _, _, text = request(port, "GET", "/metrics")
    found = re.findall(r'nv_inference_request_failure\{[^}]*reason="(\w+)"\} ([0-9.]+)', text.decode())
    return {reason: float(value) for reason, value in found}


def image_body() -> tuple[bytes, dict]:
    x = np.zeros((1, 1, 32, 32), np.float32)
    header = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 32, 32],
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


def test_fuzz_malformed_bodies_answer_json_and_server_lives() -> None:
    options = ServeOptions(port=free_port(), grpc_port=None, max_batch=4, max_request_bytes=64 * 1024,
                           exit_timeout_s=5)
    good, good_headers = image_body()
    header_len = int(good_headers["Inference-Header-Content-Length"])
    rng = np.random.default_rng(7)
    cases = [
        (b"{not json", {}, 400),
        (b"[]", {}, 400),
        (b'{"inputs": 3}', {}, 400),
        (b'{"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 32, 32], "data": [1, 2]}]}', {}, 400),
        (b'{"inputs": [{"name": "image", "datatype": "FP16", "shape": [1, 1, 32, 32], "data": [0]}]}', {}, 400),
        (good[:header_len].replace(b'"binary_data_size": 4096', b'"binary_data_size": 4095') + good[header_len:],
         good_headers, 400),  # wrong binary_data_size
        (good, {"Inference-Header-Content-Length": str(len(good) + 10)}, 400),  # header length beyond the body
        (good, {"Inference-Header-Content-Length": "-3"}, 400),
        (good, {}, 400),  # binary without the header
        (b"x" * (64 * 1024 + 1), {}, 413),  # huge body
    ]
    cases += [(rng.bytes(int(rng.integers(1, 2000))), {}, 400) for _ in range(20)]  # random bytes
    cases += [(good[:header_len] + rng.bytes(int(rng.integers(0, 5000))),
               {"Inference-Header-Content-Length": str(header_len)}, 400) for _ in range(10)]
    with running_server(options) as served:
        for body, headers, want in cases:
            status, got_headers, answer = request(options.port, "POST", PATH, body, headers)
            assert status == want, (body[:80], answer)
            assert "error" in json.loads(answer)
        assert request(options.port, "POST", PATH, good, good_headers)[0] == 200
        assert request(options.port, "GET", "/v2/health/live")[0] == 200
        counted = failures(options.port)
        assert counted["too_large"] == 1 and counted["invalid"] == len(cases) - 1
        assert served.counters.success == 1


def test_full_queue_rejects_at_once_and_is_counted() -> None:
    options = ServeOptions(port=free_port(), grpc_port=None, max_batch=1, max_queue_size=1, timeout_ms=0,
                           exit_timeout_s=5)
    with running_server(options, slow_s=0.05):
        x = np.zeros((1, 1, 32, 32), np.float32)
        target = HttpTarget(f"http://127.0.0.1:{options.port}", MODEL, {"image": x}, {"image": "FP32"})
        outcome = run_closed(target, 8, max_requests=40, duration_s=10)
        refused = outcome.statuses.get(503, 0)
        assert refused > 0 and outcome.statuses.get(200, 0) > 0
        assert set(outcome.statuses) <= {200, 503}
        assert failures(options.port)["queue_full"] == refused


def test_reject_status_429_has_retry_after() -> None:
    options = ServeOptions(port=free_port(), grpc_port=None, max_batch=1, max_queue_size=1, timeout_ms=0,
                           reject_status=429, exit_timeout_s=5)
    body, headers = image_body()
    with running_server(options, slow_s=0.05), ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: request(options.port, "POST", PATH, body, headers), range(12)))
        refused = [a for a in answers if a[0] == 429]
        assert refused and all(a[1].get("retry-after") == "1" and "error" in json.loads(a[2]) for a in refused)


def test_deadline_drops_late_requests_before_they_run() -> None:
    options = ServeOptions(port=free_port(), grpc_port=None, max_batch=1, max_queue_size=16, timeout_ms=1000,
                           exit_timeout_s=5)
    with running_server(options, slow_s=0.03) as served:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{options.port}", concurrency=6)
        x = np.zeros((1, 1, 32, 32), np.float32)
        jobs = []
        for _ in range(6):  # 6 x 30 ms cannot all finish within a 40 ms timeout
            given = httpclient.InferInput("image", [1, 1, 32, 32], "FP32")
            given.set_data_from_numpy(x)
            jobs.append(client.async_infer(MODEL, [given], timeout=40_000))
        statuses = []
        for job in jobs:
            try:
                job.get_result(timeout=30)
                statuses.append(200)
            except InferenceServerException as exc:
                statuses.append(int(exc.status()))
        client.close()
        assert 503 in statuses and set(statuses) <= {200, 503}
        counted = failures(options.port)  # refused at admission (predicted late) or dropped before running
        assert counted["deadline"] + counted["predicted_late"] == statuses.count(503)
        assert served.counters.executions < 6  # the dropped ones never ran


def test_drain_refuses_new_work_and_finishes_in_flight() -> None:
    import tritonclient.grpc as grpcclient

    options = ServeOptions(port=free_port(), grpc_port=free_port(), max_batch=1, max_queue_size=8, timeout_ms=0,
                           exit_timeout_s=10)
    body, headers = image_body()
    with running_server(options, slow_s=0.3) as served, ThreadPoolExecutor(3) as pool:
        in_flight = [pool.submit(request, options.port, "POST", PATH, body, headers) for _ in range(2)]
        end = time.monotonic() + 10
        while served.inflight < 2 and time.monotonic() < end:
            time.sleep(0.005)
        served.draining = True  # what SIGTERM does
        assert request(options.port, "GET", "/v2/health/ready")[0] == 503
        status, _, answer = request(options.port, "POST", PATH, body, headers)
        assert status == 503 and "error" in json.loads(answer)
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{options.grpc_port}")
        given = grpcclient.InferInput("image", [1, 1, 32, 32], "FP32")
        given.set_data_from_numpy(np.zeros((1, 1, 32, 32), np.float32))
        with pytest.raises(InferenceServerException) as refused:
            client.infer(MODEL, [given])
        assert "UNAVAILABLE" in str(refused.value.status())
        client.close()
        assert [f.result(timeout=30)[0] for f in in_flight] == [200, 200]


def test_sigterm_drains_and_exits(tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "rtpick", "serve", "rtpick:digits", "-r", "ort-cpu:fp32",
                             "--port", str(port), "--grpc-port", "0", "--exit-timeout", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        end = time.monotonic() + 60
        ready = False
        while time.monotonic() < end and proc.poll() is None and not ready:
            try:
                ready = request(port, "GET", "/v2/health/ready")[0] == 200
            except OSError:
                time.sleep(0.1)
        assert ready, proc.stderr.read() if proc.poll() is not None else "not ready in 60 s"
        body, headers = image_body()
        assert request(port, "POST", PATH, body, headers)[0] == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "drained in" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def test_cli_bad_input_is_one_line(tmp_path) -> None:
    from conftest import run_cli

    result = run_cli("serve", "rtpick:digits", "-r", "ort-cpu:fp32", "--reject-status", "418", "--grpc-port", "0",
                     "--port", str(free_port()), timeout=120)
    assert result.returncode == 2 and "reject-status" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("serve", "rtpick:digits", "-r", "ort-cpu:fp32", "--option", "nonsense=1", "--grpc-port", "0",
                     "--port", str(free_port()), timeout=120)
    assert result.returncode == 2 and "nonsense" in result.stderr and "Traceback" not in result.stderr


def test_runtime_failure_is_a_500_and_the_server_goes_on() -> None:
    from serve_fixtures import FailingSession

    options = ServeOptions(port=free_port(), grpc_port=None, max_batch=1, timeout_ms=0, exit_timeout_s=5)
    with running_server(options, wrap=FailingSession) as served:
        bad = np.full((1, 1, 32, 32), 666, np.float32)
        header = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 32, 32],
                                         "parameters": {"binary_data_size": bad.nbytes}}]}).encode()
        status, _, answer = request(options.port, "POST", PATH, header + bad.tobytes(),
                                    {"Inference-Header-Content-Length": str(len(header))})
        assert status == 500 and "runtime failed" in json.loads(answer)["error"]
        body, headers = image_body()
        assert request(options.port, "POST", PATH, body, headers)[0] == 200
        assert failures(options.port)["backend"] == 1 and served.counters.success == 1


def test_ready_is_503_until_the_warm_up_is_done() -> None:
    import asyncio
    import threading

    from serve_fixtures import SlowSession

    from rtpick.serve.server import build_served, serve_async

    options = ServeOptions(port=free_port(), grpc_port=None, max_batch=2, timeout_ms=0, exit_timeout_s=5)
    served = build_served("rtpick:digits", "ort-cpu:fp32", options)
    served.session = SlowSession(served.session, 0.1)  # warm-up: 2 sizes + 6 timed runs, about 0.8 s
    thread = threading.Thread(target=lambda: asyncio.run(serve_async(served, options)), daemon=True)
    thread.start()
    seen = []
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and 200 not in seen:
            try:
                live = request(options.port, "GET", "/v2/health/live")[0]
                seen.append(request(options.port, "GET", "/v2/health/ready")[0] if live == 200 else None)
            except OSError:
                pass
            time.sleep(0.02)
        assert seen and seen[0] == 503 and seen[-1] == 200
    finally:
        served.draining = True
        thread.join(15)
        served.stop()
