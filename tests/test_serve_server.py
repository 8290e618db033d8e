"""`rtpick serve` against tritonclient (HTTP and gRPC): every endpoint, outputs equal Session.run, errors as JSON.

One in-process server (uvicorn and grpc.aio on a thread) on free loopback ports serves the module; every test
bounds its loops, and the fixture always drains and joins the server.
"""

from __future__ import annotations

import http.client
import json

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("tritonclient.http")
pytest.importorskip("tritonclient.grpc")

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402
from serve_fixtures import free_port, running_demo, running_server  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

import rtpick  # noqa: E402
from rtpick.serve.server import ServeOptions  # noqa: E402

MODEL = "rtpick_digits"


@pytest.fixture(scope="module")
def server():
    with running_demo() as pair:
        yield pair


@pytest.fixture(scope="module")
def reference():
    return rtpick.load("rtpick:digits", "ort-cpu", "fp32")


def http_client(options: ServeOptions, concurrency: int = 1) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(f"127.0.0.1:{options.port}", concurrency=concurrency,
                                            network_timeout=30)


def grpc_client(options: ServeOptions) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(f"127.0.0.1:{options.grpc_port}")


def images(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 1, 32, 32)).astype(np.float32)


def raw_post(options: ServeOptions, path: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", options.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_health_and_metadata_over_http(server) -> None:
    _, options = server
    client = http_client(options)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready(MODEL, "7")
    meta = client.get_server_metadata()
    assert meta["name"] == "rtpick" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata(MODEL)
    assert model["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 32, 32]}]
    assert client.get_model_metadata(MODEL, "1")["versions"] == ["1"]
    config = client.get_model_config(MODEL)
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [1, 32, 32]
    stats = client.get_inference_statistics(MODEL)
    assert stats["model_stats"][0]["name"] == MODEL
    client.close()


@pytest.mark.parametrize("binary_in,binary_out", [(True, True), (False, False), (True, False), (False, True)])
def test_http_infer_equals_session_run(server, reference, binary_in, binary_out) -> None:
    _, options = server
    client = http_client(options)
    for rows, seed in ((1, 1), (3, 2)):
        x = images(rows, seed)
        given = httpclient.InferInput("image", list(x.shape), "FP32")
        given.set_data_from_numpy(x, binary_data=binary_in)
        wanted = httpclient.InferRequestedOutput("logits", binary_data=binary_out)
        result = client.infer(MODEL, [given], outputs=[wanted], request_id=f"r{rows}")
        expected = reference.run({"image": x})["logits"]
        got = result.as_numpy("logits")
        assert result.get_response()["id"] == f"r{rows}"
        if rows == 1:
            np.testing.assert_array_equal(got, expected)  # bit-exact at batch 1
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    client.close()


def test_grpc_endpoints_and_infer(server, reference) -> None:
    _, options = server
    client = grpc_client(options)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    assert client.get_server_metadata().name == "rtpick"
    assert client.get_model_metadata(MODEL).inputs[0].name == "image"
    assert client.get_model_config(MODEL).config.max_batch_size == 8
    assert client.get_inference_statistics(MODEL).model_stats[0].name == MODEL
    x = images(2, 5)
    given = grpcclient.InferInput("image", list(x.shape), "FP32")
    given.set_data_from_numpy(x)
    result = client.infer(MODEL, [given], request_id="g1")
    np.testing.assert_allclose(result.as_numpy("logits"), reference.run({"image": x})["logits"], rtol=1e-5,
                               atol=1e-5)
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [given])
    assert "NOT_FOUND" in str(unknown.value.status())
    bad = grpcclient.InferInput("image", [1, 1, 31, 32], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 1, 31, 32), np.float32))
    with pytest.raises(InferenceServerException) as shape:
        client.infer(MODEL, [bad])
    assert "INVALID_ARGUMENT" in str(shape.value.status())
    client.close()


def test_the_repository_index_lists_the_one_model_and_load_unload_say_why_not(server) -> None:
    """tritonclient's get_model_repository_index over HTTP and gRPC; load/unload are refused with the reason (one
    model, fixed at start), as Triton refuses them with model control off."""
    _, options = server
    http, grpc_ = http_client(options), grpc_client(options)
    assert http.get_model_repository_index() == [{"name": MODEL, "version": "1", "state": "READY"}]
    (entry,) = grpc_.get_model_repository_index().models
    assert (entry.name, entry.version, entry.state) == (MODEL, "1", "READY")
    for client in (http, grpc_):
        for action in (client.load_model, client.unload_model):
            with pytest.raises(InferenceServerException, match="serves the one model it started with"):
                action(MODEL)
    assert http.is_model_ready(MODEL)  # refused, and nothing changed
    http.close()
    grpc_.close()


def test_grpc_stream_answers_each_request_by_id_and_reports_failures_in_band(server, reference) -> None:
    """tritonclient's start_stream / async_stream_infer: one response per request (matched by id, each equal to
    Session.run), a bad request answered with its error on the stream, which goes on."""
    import queue

    _, options = server
    client = grpc_client(options)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    sent = {}
    for number in range(6):
        x = images(1 + number % 3, 20 + number)
        given = grpcclient.InferInput("image", list(x.shape), "FP32")
        given.set_data_from_numpy(x)
        client.async_stream_infer(MODEL, [given], request_id=f"s{number}")
        sent[f"s{number}"] = x
    bad = grpcclient.InferInput("image", [1, 1, 31, 32], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 1, 31, 32), np.float32))
    client.async_stream_infer(MODEL, [bad], request_id="bad")
    got, errors = {}, []
    for _ in range(len(sent) + 1):
        result, error = answers.get(timeout=30)
        if error is not None:
            errors.append(str(error))
        else:
            got[result.get_response().id] = result.as_numpy("logits")
    client.stop_stream()
    client.close()
    assert set(got) == set(sent)
    for request_id, x in sent.items():
        np.testing.assert_allclose(got[request_id], reference.run({"image": x})["logits"], rtol=1e-5, atol=1e-5)
    assert len(errors) == 1 and "shape [1, 1, 31, 32]" in errors[0]


def test_classification_extension_answers_the_top_classes_over_http_and_grpc(server, reference) -> None:
    """tritonclient's class_count (Triton's image_client -c): BYTES [rows, k] of "value:index", highest first,
    the values those of Session.run."""
    _, options = server
    x = images(3, 9)
    want = reference.run({"image": x})["logits"]
    for module, client in ((httpclient, http_client(options)), (grpcclient, grpc_client(options))):
        given = module.InferInput("image", list(x.shape), "FP32")
        given.set_data_from_numpy(x)
        asked = [module.InferRequestedOutput("logits", class_count=3)]
        answer = client.infer(MODEL, [given], outputs=asked).as_numpy("logits")
        assert answer.shape == (3, 3)
        for row, top in zip(want, answer):
            parts = [item.decode().split(":") for item in top]
            assert [int(index) for _, index in parts] == list(np.argsort(-row, kind="stable")[:3])
            np.testing.assert_allclose([float(v) for v, _ in parts], np.sort(row)[::-1][:3], atol=1e-5)
        client.close()


def test_concurrent_requests_are_batched_and_equal_session_run(server, reference) -> None:
    served, options = server
    client = http_client(options, concurrency=8)
    xs = [images(1 + i % 3, 100 + i) for i in range(24)]
    before = served.counters.executions
    pending = []
    for x in xs:
        given = httpclient.InferInput("image", list(x.shape), "FP32")
        given.set_data_from_numpy(x)
        pending.append(client.async_infer(MODEL, [given]))
    for x, job in zip(xs, pending):
        got = job.get_result(timeout=30).as_numpy("logits")
        np.testing.assert_allclose(got, reference.run({"image": x})["logits"], rtol=1e-5, atol=1e-5)
    assert served.counters.executions - before <= len(xs)
    client.close()


def test_http_negative_statuses(server) -> None:
    _, options = server
    client = http_client(options)
    x = images(1, 0)
    given = httpclient.InferInput("image", list(x.shape), "FP32")
    given.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as unknown:
        client.infer("nope", [given])
    assert unknown.value.status() == "404"
    with pytest.raises(InferenceServerException) as version:
        client.infer(MODEL, [given], model_version="3")
    assert version.value.status() == "404"
    wrong = httpclient.InferInput("pixels", list(x.shape), "FP32")
    wrong.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as name:
        client.infer(MODEL, [wrong])
    assert name.value.status() == "400"
    half = httpclient.InferInput("image", list(x.shape), "FP16")
    half.set_data_from_numpy(x.astype(np.float16))
    with pytest.raises(InferenceServerException) as dtype:
        client.infer(MODEL, [half])
    assert dtype.value.status() == "400"
    big = images(9, 0)  # over the max batch of 8
    over = httpclient.InferInput("image", list(big.shape), "FP32")
    over.set_data_from_numpy(big)
    with pytest.raises(InferenceServerException) as batch:
        client.infer(MODEL, [over])
    assert batch.value.status() == "400"
    client.close()


def test_unknown_parameters_ignored_and_timeout_parameter(server) -> None:
    _, options = server
    body = json.dumps({"id": "p", "parameters": {"whatever": 3, "timeout": 5_000_000},
                       "inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 1, 32, 32],
                                   "data": [0.0] * 1024}]}).encode()
    status, answer = raw_post(options, f"/v2/models/{MODEL}/infer", body)
    assert status == 200 and json.loads(answer)["id"] == "p"


def test_metrics_names(server) -> None:
    _, options = server
    conn = http.client.HTTPConnection("127.0.0.1", options.port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for name in ("nv_inference_request_success{", "nv_inference_request_failure{", "nv_inference_count{",
                 "nv_inference_exec_count{", "nv_inference_pending_request_count{",
                 "nv_inference_queue_duration_us{", "nv_inference_compute_infer_duration_us{",
                 "rtpick_request_latency_seconds_bucket{", "rtpick_batch_size_bucket{"):
        assert name in text
    assert "# TYPE nv_inference_request_success counter" in text
    assert 'reason="invalid"' in text


def test_unknown_route_and_method_are_json(server) -> None:
    _, options = server
    conn = http.client.HTTPConnection("127.0.0.1", options.port, timeout=30)
    conn.request("GET", "/v2/nothing/here")
    response = conn.getresponse()
    assert response.status == 404 and "error" in json.loads(response.read())
    conn.request("GET", f"/v2/models/{MODEL}/infer")
    response = conn.getresponse()
    assert response.status == 405 and "error" in json.loads(response.read())
    conn.close()


def test_torch_runtime_serves_the_model_names() -> None:
    pytest.importorskip("torch")
    from rtpick.serve.server import build_served

    served = build_served("rtpick:digits", "torch-cpu:fp32", ServeOptions(max_batch=2))
    assert [t.name for t in served.signature.inputs] == ["image"]  # not libtorch's INPUT__0
    assert served.config["input"][0]["name"] == "image" and "image" in served.config["model_warmup"][0]["inputs"]


def test_deploy_file_settings_and_flag_overrides(tmp_path) -> None:
    from rtpick.deploy import DeployConfig
    from rtpick.errors import RtpickError
    from rtpick.serve.server import build_served
    from rtpick.sources import load_model

    spec = load_model("rtpick:digits").spec
    path = tmp_path / "deploy.json"
    DeployConfig("rtpick:digits", spec.sha256, spec.name, "ort-cpu", "fp32", batch=4,
                 shapes={"image": [4, 1, 32, 32]},
                 measured={"budget_p99_ms": 50.0, "max_queue_delay_us": 500}).write(path)
    served = build_served(str(path), None, ServeOptions())
    s = served.settings
    assert (s.max_batch, s.max_queue_delay_s, s.timeout_s) == (4, 0.0005, 0.05)
    assert served.config["max_batch_size"] == 4
    over = build_served(str(path), None, ServeOptions(max_queue_delay_ms=1.0, timeout_ms=10, max_queue_size=3))
    assert (over.settings.max_queue_delay_s, over.settings.timeout_s, over.settings.max_queue) == (0.001, 0.01, 3)
    with pytest.raises(RtpickError, match="fixes the configuration"):
        build_served(str(path), "ort-cpu:fp32", ServeOptions())
    with pytest.raises(RtpickError, match="drop -r/--option/--shape"):
        build_served(str(path), None, ServeOptions(shapes={"image": (1, 1, 32, 32)}))


def test_a_model_without_batch_axis_is_served_one_request_per_run(tmp_path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "double",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    path = tmp_path / "double.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every onnxruntime reads, whichever onnx wrote it
    onnx.save(model, str(path))
    options = ServeOptions(port=free_port(), grpc_port=None, timeout_ms=0, exit_timeout_s=5)
    with running_server(options, target=str(path)) as served:
        assert served.config["max_batch_size"] == 0 and served.settings.max_batch == 1
        client = http_client(options)
        given = httpclient.InferInput("x", [3], "FP32")
        given.set_data_from_numpy(np.array([1, 2, 3], np.float32))
        result = client.infer(served.name, [given])
        np.testing.assert_array_equal(result.as_numpy("y"), [2, 4, 6])
        client.close()


def test_max_batch_flag_below_the_deploy_batch_is_what_config_says() -> None:
    from rtpick.serve.server import build_served

    served = build_served("rtpick:digits", "ort-cpu:fp32", ServeOptions(max_batch=3))
    assert served.config["max_batch_size"] == 3 == served.signature.max_batch_size


def _open_image_model(path) -> str:
    """A Conv over [N, 3, H, W] with H and W left open (as OCR and detection models export them)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "open_hw",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, "h", "w"])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_a_model_with_open_image_dims_is_served_at_the_shape_given(tmp_path) -> None:
    """--shape fixes H and W (its leading dim becomes the served batch); /config shows them, rows of that shape are
    batched and answered as Session.run answers them, another H or W is a 400 naming the shape wanted."""
    from rtpick.errors import RtpickError
    from rtpick.serve.server import build_served

    path = _open_image_model(tmp_path / "open.onnx")
    with pytest.raises(RtpickError, match="--shape"):
        build_served(path, "ort-cpu:fp32", ServeOptions(max_batch=2))
    options = ServeOptions(port=free_port(), grpc_port=free_port(), max_batch=2, timeout_ms=0,
                           shapes={"x": (1, 3, 16, 24)})
    with running_server(options, target=path) as served:
        assert served.config["input"][0]["dims"] == [3, 16, 24]
        assert served.config["max_batch_size"] == 2
        client = http_client(options)
        x = np.random.default_rng(1).standard_normal((2, 3, 16, 24)).astype(np.float32)
        given = httpclient.InferInput("x", list(x.shape), "FP32")
        given.set_data_from_numpy(x)
        answer = client.infer(served.name, [given]).as_numpy("y")
        expected = rtpick.load(path, "ort-cpu", "fp32", shapes={"x": x.shape}).run({"x": x})["y"]
        np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-5)
        other = httpclient.InferInput("x", [1, 3, 16, 20], "FP32")
        other.set_data_from_numpy(x[:1, :, :, :20].copy())
        with pytest.raises(InferenceServerException, match=r"\[3, 16, 24\]"):
            client.infer(served.name, [other])
        client.close()


def _scalar_model(path) -> str:
    """y = x * s and total = sum(y), with s a rank-0 input (as Silero VAD's sample rate) and total a rank-0
    output; x's leading dim is open but s has none, so the model has no batch axis."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "s"], ["y"]), helper.make_node("ReduceSum", ["y"], ["total"], keepdims=0)],
        "scaled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3]),
                   helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3]),
         helper.make_tensor_value_info("total", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def test_scalar_inputs_and_outputs_are_served_as_triton_declares_them(tmp_path) -> None:
    """Triton refuses empty dims, so a scalar is declared [1]: requests send [1], the model gets its rank-0 value,
    and a rank-0 output comes back as [1], over HTTP and gRPC; the warm-up takes --input-range's values."""
    path = _scalar_model(tmp_path / "scalar.onnx")
    options = ServeOptions(port=free_port(), grpc_port=free_port(), timeout_ms=0, exit_timeout_s=5,
                           shapes={"x": (2, 3)}, warm_ranges={"s": (2.0, 3.0)})
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with running_server(options, target=path) as served:
        assert served.config["max_batch_size"] == 0
        dims = {entry["name"]: entry["dims"] for entry in served.config["input"] + served.config["output"]}
        assert dims["s"] == [1] and dims["total"] == [1] and dims["x"] == [2, 3]
        for module, client in ((httpclient, http_client(options)), (grpcclient, grpc_client(options))):
            given = [module.InferInput("x", [2, 3], "FP32"), module.InferInput("s", [1], "FP32")]
            given[0].set_data_from_numpy(x)
            given[1].set_data_from_numpy(np.array([0.5], np.float32))
            result = client.infer(served.name, given)
            np.testing.assert_array_equal(result.as_numpy("y"), x * 0.5)
            np.testing.assert_array_equal(result.as_numpy("total"), [7.5])
            bare = [module.InferInput("x", [2, 3], "FP32"), module.InferInput("s", [], "FP32")]
            bare[0].set_data_from_numpy(x)
            bare[1].set_data_from_numpy(np.array(0.5, np.float32))
            with pytest.raises(InferenceServerException, match=r"'s' has shape \[\], the model wants \[1\]"):
                client.infer(served.name, bare)
            client.close()


def test_a_warm_up_failure_is_one_line_naming_input_range(tmp_path) -> None:
    """A model that fails on rtpick's synthetic inputs (a sample rate it does not know, as Silero VAD) is a
    one-line error at start saying how to give the values; with them it serves."""
    from conftest import rate_model, run_cli

    path = rate_model(tmp_path / "rated.onnx")
    done = run_cli("serve", path, "--port", str(free_port()), "--grpc-port", "0", timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "failed its warm-up on synthetic inputs" in done.stderr and "--input-range" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    options = ServeOptions(port=free_port(), grpc_port=None, timeout_ms=0, exit_timeout_s=5,
                           warm_ranges={"sr": (16000, 16001)})
    with running_server(options, target=path) as served:
        client = http_client(options)
        given = [httpclient.InferInput("x", [4], "FP32"), httpclient.InferInput("sr", [1], "INT64")]
        given[0].set_data_from_numpy(np.arange(4, dtype=np.float32))
        given[1].set_data_from_numpy(np.array([16000], np.int64))
        np.testing.assert_array_equal(client.infer(served.name, given).as_numpy("y"), [0, 1, 2, 3])
        client.close()


def test_an_embedding_index_warms_up_below_its_table_without_a_range(tmp_path) -> None:
    """y = table[i] with a 10-row table: the warm-up's synthetic index stays below 10 (read from the graph)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.arange(10, dtype=np.float32), "table")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "i"], ["y"])], "lookup",
                              [helper.make_tensor_value_info("i", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "lookup.onnx"
    onnx.save(model, str(path))
    options = ServeOptions(port=free_port(), grpc_port=None, timeout_ms=0, exit_timeout_s=5)
    with running_server(options, target=str(path)) as served:
        client = http_client(options)
        given = httpclient.InferInput("i", [1], "INT64")
        given.set_data_from_numpy(np.array([7], np.int64))
        np.testing.assert_array_equal(client.infer(served.name, [given]).as_numpy("y"), [7.0])
        client.close()


def test_an_output_whose_first_dim_is_not_the_batch_is_refused_at_start(tmp_path) -> None:
    """Kept boxes [K, 2] from a batch of rows: every input and output leads with an open dim, so it looks
    batched, but row i of the output is not request i's; serving it would hand out other requests' rows."""
    import onnx
    from onnx import TensorProto, helper

    from rtpick.errors import RtpickError
    from rtpick.serve.server import build_served

    nodes = [helper.make_node("NonZero", ["x"], ["where"]), helper.make_node("Transpose", ["where"], ["kept"])]
    graph = helper.make_graph(nodes, "kept", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("kept", TensorProto.INT64, ["k", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "kept.onnx"
    onnx.save(model, str(path))
    served = build_served(str(path), "ort-cpu:fp32", ServeOptions(max_batch=2, timeout_ms=0))
    with pytest.raises(RtpickError, match="output 'kept' has shape .* its first dim is not the batch"):
        served.start()
    served.stop()
