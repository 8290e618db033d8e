"""The system shared-memory extension: tritonclient's shared_memory utilities over HTTP and gRPC against a server
started here (loopback), outputs equal Session.run, and every bad range, key or region refused as a 400 JSON /
INVALID_ARGUMENT. Every region this module creates is unlinked in teardown.
"""

from __future__ import annotations

import json
import os
import uuid

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("tritonclient.http")
pytest.importorskip("tritonclient.grpc")
if not os.path.isdir("/dev/shm"):
    pytest.skip("no /dev/shm on this host (POSIX shared memory is Linux's here)", allow_module_level=True)

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
import tritonclient.utils.shared_memory as shm  # noqa: E402
from serve_fixtures import free_port, running_demo, running_server  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

import rtpick  # noqa: E402
from rtpick.serve.errors import ProtocolError  # noqa: E402
from rtpick.serve.server import ServeOptions  # noqa: E402
from rtpick.serve.shared_memory import SharedMemoryRegistry, ShmTarget, key_path, write_tensor  # noqa: E402

MODEL = "rtpick_digits"
ROWS = 3
IN_BYTES = ROWS * 1 * 32 * 32 * 4
OUT_BYTES = ROWS * 10 * 4


@pytest.fixture(scope="module")
def server():
    with running_demo() as pair:
        yield pair


@pytest.fixture(scope="module")
def reference():
    return rtpick.load("rtpick:digits", "ort-cpu", "fp32")


@pytest.fixture
def regions():
    """Input and output regions with keys unique to this test; destroyed (unlinked) whatever happens."""
    tag = uuid.uuid4().hex[:10]
    made = {"in": shm.create_shared_memory_region(f"in_{tag}", f"/rtpick_test_in_{tag}", IN_BYTES + 64),
            "out": shm.create_shared_memory_region(f"out_{tag}", f"/rtpick_test_out_{tag}", OUT_BYTES)}
    keys = {"in": f"/rtpick_test_in_{tag}", "out": f"/rtpick_test_out_{tag}", "tag": tag}
    try:
        yield made, keys
    finally:
        for handle in made.values():
            shm.destroy_shared_memory_region(handle)
        assert not any(os.path.exists(f"/dev/shm/{keys[k][1:]}") for k in ("in", "out"))


def images(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((ROWS, 1, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_infer_through_shared_memory_equals_session_run(server, reference, regions, protocol) -> None:
    served, options = server
    made, keys = regions
    tag = keys["tag"]
    client_module = httpclient if protocol == "http" else grpcclient
    port = options.port if protocol == "http" else options.grpc_port
    client = client_module.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        client.unregister_system_shared_memory()
        client.register_system_shared_memory(f"in_{tag}", keys["in"], IN_BYTES, offset=64)
        client.register_system_shared_memory(f"out_{tag}", keys["out"], OUT_BYTES)
        status = client.get_system_shared_memory_status(f"in_{tag}")
        if protocol == "http":
            assert status == [{"name": f"in_{tag}", "key": keys["in"], "offset": 64, "byte_size": IN_BYTES}]
        else:
            assert status.regions[f"in_{tag}"].byte_size == IN_BYTES
        for seed in (1, 2):
            x = images(seed)
            shm.set_shared_memory_region(made["in"], [x], offset=64)
            given = client_module.InferInput("image", list(x.shape), "FP32")
            given.set_shared_memory(f"in_{tag}", IN_BYTES)
            wanted = client_module.InferRequestedOutput("logits")
            wanted.set_shared_memory(f"out_{tag}", OUT_BYTES)
            result = client.infer(MODEL, [given], outputs=[wanted])
            answered = result.get_output("logits")
            shape = answered["shape"] if protocol == "http" else list(answered.shape)
            got = shm.get_contents_as_numpy(made["out"], np.float32, shape)
            np.testing.assert_allclose(got, reference.run({"image": x})["logits"], rtol=1e-5, atol=1e-5)
            assert shape == [ROWS, 10]
        # shared-memory input, output in the response: still equal
        plain = client.infer(MODEL, [given])
        np.testing.assert_allclose(plain.as_numpy("logits"), reference.run({"image": x})["logits"], rtol=1e-5,
                                   atol=1e-5)
        client.unregister_system_shared_memory(f"in_{tag}")
        with pytest.raises(InferenceServerException):  # unregistered: an unknown region now
            client.infer(MODEL, [given])
    finally:
        client.unregister_system_shared_memory()
        client.close()
    assert len(served.shared_memory) == 0


def http_post(port: int, path: str, document: dict) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(document).encode(), headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def test_bad_ranges_and_regions_are_400_json_over_http(server, regions) -> None:
    _, options = server
    made, keys = regions
    tag = keys["tag"]
    port = options.port
    base = "/v2/systemsharedmemory/region"
    assert http_post(port, f"{base}/in_{tag}/register", {"key": keys["in"], "offset": 0,
                                                          "byte_size": IN_BYTES + 64})[0] == 200
    try:
        for name, body in [(f"x_{tag}", {"key": keys["in"], "offset": 0, "byte_size": IN_BYTES + 65}),  # too long
                           (f"x_{tag}", {"key": keys["in"], "offset": -1, "byte_size": 8}),
                           (f"x_{tag}", {"key": "../etc/passwd", "offset": 0, "byte_size": 8}),
                           (f"x_{tag}", {"key": "/no_such_rtpick_key", "offset": 0, "byte_size": 8}),
                           (f"in_{tag}", {"key": keys["in"], "offset": 0, "byte_size": 8}),  # registered already
                           ("bad%2Fname", {"key": keys["in"], "offset": 0, "byte_size": 8})]:
            status, answer = http_post(port, f"{base}/{name}/register", body)
            assert status in (400, 404) and "error" in answer, (name, body, status, answer)

        def infer(in_params: dict, out_params: dict | None = None) -> tuple[int, dict]:
            document = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [ROWS, 1, 32, 32],
                                    "parameters": in_params}]}
            if out_params is not None:
                document["outputs"] = [{"name": "logits", "parameters": out_params}]
            return http_post(port, f"/v2/models/{MODEL}/infer", document)

        good = {"shared_memory_region": f"in_{tag}", "shared_memory_byte_size": IN_BYTES}
        assert infer(good)[0] == 200
        for bad in [{**good, "shared_memory_offset": 65},  # runs past the region's end
                    {**good, "shared_memory_byte_size": IN_BYTES - 4},  # not what the shape needs
                    {**good, "shared_memory_region": "unknown_region"},
                    {**good, "shared_memory_offset": -4},
                    {"shared_memory_byte_size": IN_BYTES}]:  # no region named
            status, answer = infer(bad)
            assert status == 400 and "error" in answer, (bad, status, answer)
        status, answer = infer(good, {"shared_memory_region": f"in_{tag}", "shared_memory_byte_size": 8})
        assert status == 400 and "smaller" in answer["error"]  # the output would not fit
        assert http_post(port, "/v2/systemsharedmemory/region/nope/status", {})[0] == 405
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/v2/systemsharedmemory/region/unknown_region/status")
        response = conn.getresponse()
        assert response.status == 400 and "error" in json.loads(response.read())
        conn.close()
    finally:
        http_post(port, "/v2/systemsharedmemory/unregister", {})


def test_bad_ranges_and_regions_are_invalid_argument_over_grpc(server, regions) -> None:
    _, options = server
    made, keys = regions
    tag = keys["tag"]
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{options.grpc_port}")
    try:
        with pytest.raises(InferenceServerException) as traversal:
            client.register_system_shared_memory(f"x_{tag}", "/../../etc/passwd", 8)
        assert "INVALID_ARGUMENT" in str(traversal.value.status())
        client.register_system_shared_memory(f"in_{tag}", keys["in"], IN_BYTES)
        for region, size, offset in [(f"in_{tag}", IN_BYTES, 4), ("unknown_region", IN_BYTES, 0),
                                     (f"in_{tag}", IN_BYTES - 4, 0)]:
            given = grpcclient.InferInput("image", [ROWS, 1, 32, 32], "FP32")
            given.set_shared_memory(region, size, offset)
            with pytest.raises(InferenceServerException) as refused:
                client.infer(MODEL, [given])
            assert "INVALID_ARGUMENT" in str(refused.value.status()), (region, size, offset)
    finally:
        client.unregister_system_shared_memory()
        client.close()


# ------------------------------------------------------------------------------------ the registry on its own


def test_registry_refuses_symlinks_other_files_and_too_many_regions(tmp_path) -> None:
    (tmp_path / "target").write_bytes(b"\0" * 64)
    (tmp_path / "link").symlink_to(tmp_path / "target")
    (tmp_path / "folder").mkdir()
    registry = SharedMemoryRegistry(max_regions=2, directory=str(tmp_path))
    for key in ("link", "folder", "../target", "a/b", "..", "", "x" * 300, "with space", 7):
        with pytest.raises(ProtocolError) as refused:
            registry.register("r", key, 0, 8)
        assert refused.value.status == 400, key
    registry.register("a", "/target", 0, 32)
    registry.register("b", "target", 32, 32)
    with pytest.raises(ProtocolError, match="limit"):
        registry.register("c", "target", 0, 8)
    assert [r["name"] for r in registry.status()] == ["a", "b"]
    registry.unregister("a")
    registry.register("c", "target", 0, 64)
    registry.unregister()
    assert len(registry) == 0


def test_a_shrunk_object_or_a_small_range_is_refused_not_a_crash(tmp_path) -> None:
    path = tmp_path / "obj"
    path.write_bytes(b"\0" * 4096)
    registry = SharedMemoryRegistry(directory=str(tmp_path))
    registry.register("r", "obj", 0, 4096)
    region = registry.get("r", "test")
    target = ShmTarget(region, 0, 16)
    assert write_tensor(target, np.arange(4, dtype=np.float32), "FP32", "y") == 16
    assert np.frombuffer(path.read_bytes()[:16], np.float32).tolist() == [0, 1, 2, 3]
    with pytest.raises(ProtocolError, match="do not fit"):
        write_tensor(target, np.arange(5, dtype=np.float32), "FP32", "y")
    os.truncate(path, 100)
    with pytest.raises(ProtocolError, match="shrunk"):
        region.window(0, 8, "input")
    view = None
    os.truncate(path, 4096)
    view = region.window(0, 8, "input")  # a request still holds a view when the region goes
    registry.unregister("r")
    assert bytes(view) == b"\0" * 8 or len(view) == 8
    with pytest.raises(ProtocolError, match="unregistered"):
        region.window(0, 8, "output")
    del view


def test_key_path_is_one_name_under_dev_shm() -> None:
    assert key_path("/abc.1-x") == "/dev/shm/abc.1-x" and key_path("abc") == "/dev/shm/abc"
    for bad in ("/a/b", "//a", "/..", "a\0b", "a\nb", "abc\n"):
        with pytest.raises(ProtocolError):
            key_path(bad)


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_loadgen_shared_memory_system(server, capsys, scheme) -> None:
    from rtpick.serve import loadgen

    served, options = server
    port = options.port if scheme == "http" else options.grpc_port
    before = set(os.listdir("/dev/shm"))
    code = loadgen.main([f"{scheme}://127.0.0.1:{port}", "--model", MODEL, "--input", "image:FP32:2x1x32x32",
                         "--concurrency", "2", "--duration", "0.5", "--max-requests", "40",
                         "--shared-memory", "system"])
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["ok"] == summary["sent"] > 0, summary
    assert len(served.shared_memory) == 0  # unregistered
    assert not {n for n in set(os.listdir("/dev/shm")) - before if n.startswith("rtpick_lg_")}  # unlinked


def test_only_local_peers_register() -> None:
    from rtpick.serve.shared_memory import check_local_peer, grpc_peer_host

    for host in ("127.0.0.1", "::1", "127.0.0.2", "localhost"):
        check_local_peer(host)
    for host in ("10.0.0.5", "192.168.1.2", "2001:db8::1", None, "example.com"):
        with pytest.raises(ProtocolError) as refused:
            check_local_peer(host)
        assert refused.value.status == 403 and refused.value.grpc_code() == "PERMISSION_DENIED"
    assert grpc_peer_host("ipv4:127.0.0.1:5000") == "127.0.0.1"
    assert grpc_peer_host("ipv6:[::1]:5000") == "::1" and grpc_peer_host("ipv6:%5B::1%5D:5000") != "10.0.0.1"
    assert grpc_peer_host("unix:/tmp/x") == "localhost" and grpc_peer_host("weird") is None


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="changing a file's owner needs root")
def test_an_object_of_another_user_is_refused(tmp_path) -> None:
    (tmp_path / "theirs").write_bytes(b"\0" * 64)
    os.chown(tmp_path / "theirs", 12345, 12345)
    with pytest.raises(ProtocolError, match="another user"):
        SharedMemoryRegistry(directory=str(tmp_path)).register("r", "theirs", 0, 8)


def test_odd_parameter_values_are_400_json_and_the_server_lives(server, regions) -> None:
    import http.client

    _, options = server
    made, keys = regions
    tag = keys["tag"]
    port = options.port
    assert http_post(port, f"/v2/systemsharedmemory/region/in_{tag}/register",
                     {"key": keys["in"], "byte_size": IN_BYTES + 64})[0] == 200
    odd = [None, -1, 2 ** 70, "x", 1.5, True, [], {}, "", IN_BYTES + 64]
    rng = np.random.default_rng(3)
    try:
        for _ in range(60):
            params = {"shared_memory_region": f"in_{tag}", "shared_memory_byte_size": IN_BYTES}
            key = ["shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"][int(rng.integers(3))]
            params[key] = odd[int(rng.integers(len(odd)))]
            document = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [ROWS, 1, 32, 32],
                                    "parameters": params}]}
            status, answer = http_post(port, f"/v2/models/{MODEL}/infer", document)
            assert status in (200, 400) and ("error" in answer) == (status == 400), (params, status, answer)
        for body in ({"key": 5, "byte_size": 8}, {"key": keys["in"], "byte_size": "8"}, {"key": keys["in"]},
                     {"key": keys["in"], "byte_size": 8, "offset": 2 ** 70}):
            status, answer = http_post(port, f"/v2/systemsharedmemory/region/y_{tag}/register", body)
            assert status == 400 and "error" in answer, body
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/v2/health/live")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        http_post(port, "/v2/systemsharedmemory/unregister", {})


def test_the_extension_can_be_turned_off() -> None:
    options = ServeOptions(port=free_port(), grpc_port=free_port(), max_batch=2, timeout_ms=0,
                           exit_timeout_s=5, shared_memory_regions=0)
    with running_server(options) as served:
        assert served.shared_memory is None
        client = httpclient.InferenceServerClient(f"127.0.0.1:{options.port}")
        assert "system_shared_memory" not in client.get_server_metadata()["extensions"]
        with pytest.raises(InferenceServerException, match="turned off"):
            client.register_system_shared_memory("r", "/rtpick_never_made", 8)
        client.close()


def test_serve_flag_is_checked() -> None:
    from conftest import run_cli

    result = run_cli("serve", "rtpick:digits", "--shared-memory-regions", "-1")
    assert result.returncode == 2 and "--shared-memory-regions" in result.stderr
