"""A real Triton Inference Server loads the python-backend export to READY and serves it (pytriton's binary).

The ``nvidia-pytriton`` wheel ships a ``tritonserver`` binary with only the python backend. Install it without
its dependencies (its numpy<2 pin would downgrade numpy): ``pip install --no-deps nvidia-pytriton``. The test is
skipped, with the reason, where the wheel is absent or its binary cannot start here. Loopback only; every wait
is bounded.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SRC, torch_available

pytestmark = pytest.mark.slow
pytest.importorskip("tritonclient.http")


def pytriton_server() -> tuple[Path, Path, Path]:
    """(tritonserver binary, python backend folder, stub for this Python); skips with the reason otherwise."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nvidia-pytriton is not installed (pip install --no-deps nvidia-pytriton)")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    binary = root / "bin" / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not binary.exists() or not stub.exists():
        pytest.skip(f"pytriton has no tritonserver binary or no python backend stub for Python {version}")
    return binary, root / "backends" / "python", stub


def server_env() -> dict[str, str]:
    spec = importlib.util.find_spec("pytriton")
    assert spec is not None and spec.submodule_search_locations
    libs = Path(next(iter(spec.submodule_search_locations))).parent / "nvidia_pytriton.libs"
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    # the backend's embedded Python finds this interpreter's packages through PATH, as pytriton arranges it
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH", "")) if p)
    return env


def can_start(binary: Path, env: dict[str, str]) -> str:
    """'' when the binary runs here, else why not."""
    try:
        done = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{binary} cannot start: {exc}"
    if "--model-repository" not in done.stdout + done.stderr:
        return f"{binary} cannot start: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def agree_on_shared_keys(ours: Any, theirs: Any, where: str = "config") -> None:
    """Every value rtpick sets equals Triton's (Triton adds defaults of its own, which are not compared)."""
    if isinstance(ours, dict):
        assert isinstance(theirs, dict), where
        for key, value in ours.items():
            assert key in theirs, f"{where}.{key} missing from Triton's config"
            agree_on_shared_keys(value, theirs[key], f"{where}.{key}")
    elif isinstance(ours, list):
        assert isinstance(theirs, list) and len(ours) == len(theirs), where
        for index, (a, b) in enumerate(zip(ours, theirs)):
            agree_on_shared_keys(a, b, f"{where}[{index}]")
    else:
        assert ours == theirs, f"{where}: rtpick {ours!r}, Triton {theirs!r}"


@pytest.mark.skipif(not torch_available(), reason="torch is not installed (the exported session is torch-cpu)")
def test_python_backend_export_loads_to_ready_and_serves(tmp_path: Path) -> None:
    import tritonclient.http as httpclient

    from rtpick.deploy import DeployConfig
    from rtpick.export.repository import export_triton
    from rtpick.export.triton import model_config_json
    from rtpick.runtimes.registry import get_runtime
    from rtpick.sources import load_model

    binary, backend, stub = pytriton_server()
    env = server_env()
    reason = can_start(binary, env)
    if reason:
        pytest.skip(reason)
    model = load_model("rtpick:digits")
    deploy = DeployConfig("rtpick:digits", model.spec.sha256, model.spec.name, "torch-cpu", "fp32",
                          get_runtime("torch-cpu").check_options({"channels_last": True}),  # rtpick-only: python
                          batch=4, shapes={"image": [4, 1, 32, 32]},
                          # a loose budget: the queue timeout it implies must not reject requests on a busy CI box
                          measured={"p99_ms": 1.0, "throughput": 1000.0, "budget": "p99 <= 5000 ms (single-stream)"})
    deploy_path = tmp_path / "deploy.json"
    deploy.write(deploy_path)
    result = export_triton(deploy_path, tmp_path / "repo")
    assert "loaded to READY" in result.label

    backends = tmp_path / "backends" / "python"
    backends.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy(backend / name, backends / name)
    shutil.copy(stub, backends / "triton_python_backend_stub")
    http_port, grpc_port = free_port(), free_port()
    log = (tmp_path / "tritonserver.log").open("w")
    server = subprocess.Popen(
        [str(binary), f"--model-repository={tmp_path / 'repo'}", f"--backend-directory={backends.parent}",
         "--http-address=127.0.0.1", f"--http-port={http_port}", "--grpc-address=127.0.0.1",
         f"--grpc-port={grpc_port}", "--allow-metrics=false", "--exit-timeout-secs=5"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}", network_timeout=10.0)
        deadline = time.monotonic() + 90
        ready = False
        while time.monotonic() < deadline and server.poll() is None:
            try:
                ready = client.is_model_ready(result.model_name)
            except Exception:  # noqa: BLE001 - not listening yet
                ready = False
            if ready:
                break
            time.sleep(0.5)
        text = (tmp_path / "tritonserver.log").read_text()
        if not ready and "error while loading shared libraries" in text:
            pytest.skip("the python backend stub cannot start here: " + text.strip().splitlines()[-1])
        assert ready, f"model not READY within 90 s; server log:\n{text[-3000:]}"

        theirs = client.get_model_config(result.model_name)
        ours = model_config_json(deploy, model.spec, result.model_name)
        agree_on_shared_keys(ours, theirs)

        image = np.random.default_rng(7).standard_normal((3, 1, 32, 32)).astype(np.float32)
        request = httpclient.InferInput("image", list(image.shape), "FP32")
        request.set_data_from_numpy(image)
        got = client.infer(result.model_name, [request]).as_numpy("logits")
        with deploy.build() as session:
            want = session.run({"image": image})["logits"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        client.close()

        # concurrent requests of different batch sizes: Triton may batch them into one execute() call, which
        # model.py concatenates, runs once and splits back
        batched = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}", concurrency=6, network_timeout=30.0)
        images = [np.random.default_rng(i).standard_normal((1 + i % 2, 1, 32, 32)).astype(np.float32)
                  for i in range(6)]
        pending = []
        for image in images:
            request = httpclient.InferInput("image", list(image.shape), "FP32")
            request.set_data_from_numpy(image)
            pending.append(batched.async_infer(result.model_name, [request]))
        with deploy.build() as session:
            for image, reply in zip(images, pending):
                np.testing.assert_allclose(reply.get_result(timeout=30).as_numpy("logits"),
                                           session.run({"image": image})["logits"], rtol=1e-5, atol=1e-6)
        batched.close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()
