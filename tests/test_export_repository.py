"""`rtpick export triton|kserve` end to end: the files, the refusals (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, torch_available

pytest.importorskip("tritonclient.grpc")
yaml = pytest.importorskip("yaml")

from rtpick.deploy import DeployConfig  # noqa: E402
from rtpick.export.kserve import missing_fields  # noqa: E402
from rtpick.export.repository import NOT_LOADED  # noqa: E402
from rtpick.export.triton import parse_pbtxt  # noqa: E402
from rtpick.files import file_sha256  # noqa: E402
from rtpick.runtimes.registry import get_runtime  # noqa: E402
from rtpick.sources import load_model  # noqa: E402

MEASURED = {"p99_ms": 0.5, "throughput": 2000.0, "budget": "p99 <= 4 ms (single-stream)", "host_mem_mb": 300.0,
            "method": "single-stream"}


def write_deploy(tmp_path: Path, source: str, runtime: str, precision: str = "fp32", options: dict | None = None,
                 measured: dict | None = None) -> Path:
    model = load_model(source)
    shapes = {t.name: [4, *t.shape[1:]] for t in model.spec.inputs}
    deploy = DeployConfig(source, model.spec.sha256, model.spec.name, runtime, precision,
                          get_runtime(runtime).check_options(options or {}), batch=4, shapes=shapes,
                          measured=dict(MEASURED if measured is None else measured))
    path = tmp_path / f"deploy-{runtime}-{precision}.json"
    deploy.write(path)
    return path


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if "rtpick-export" in p.name or "rtpick-old" in p.name]


def test_ort_cpu_repository_through_the_cli(tmp_path: Path, small_onnx: Path) -> None:
    model = tmp_path / "mlp.onnx"
    shutil.copyfile(small_onnx, model)
    deploy = write_deploy(tmp_path, str(model), "ort-cpu")
    out = tmp_path / "repo"
    done = run_cli("export", "triton", str(deploy), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert NOT_LOADED in done.stdout  # no onnxruntime backend in the test server
    config_text = (out / "mlp" / "config.pbtxt").read_text()
    config = parse_pbtxt(config_text)
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 4
    assert (out / "mlp" / "1" / "model.onnx").read_bytes() == model.read_bytes()
    readme = (out / "README.md").read_text()
    for needed in ("tritonserver --model-repository", "perf_analyzer -m mlp", "--latency-threshold 4",
                   "kind: InferenceService", NOT_LOADED):
        assert needed in readme
    assert leftovers(tmp_path) == []


def test_int8_exports_the_quantised_model(tmp_path: Path, small_onnx: Path) -> None:
    model = tmp_path / "mlp.onnx"
    shutil.copyfile(small_onnx, model)
    # int8_min_speedup 0: keep the fastest accurate variant whatever the timing (a busy machine decides nothing)
    deploy = write_deploy(tmp_path, str(model), "ort-cpu", "int8", options={"int8_min_speedup": 0})
    done = run_cli("export", "triton", str(deploy), "-o", str(tmp_path / "repo"))
    assert done.returncode == 0, done.stderr
    exported = tmp_path / "repo" / "mlp" / "1" / "model.onnx"
    import onnx

    from rtpick.deploy import DeployConfig
    from rtpick.files import file_sha256

    ops = {node.op_type for node in onnx.load(str(exported)).graph.node}
    assert ops & {"QuantizeLinear", "DynamicQuantizeLinear", "QLinearMatMul", "MatMulInteger"}  # int8, not fp32
    # the very file the runtime loads: the variant its int8 search chose (cached by model hash), not a recipe's
    config = DeployConfig.read(deploy)
    loaded, _ = get_runtime("ort-cpu").onnx_file(load_model(str(model)), "int8",
                                                 {k: tuple(v) for k, v in config.shapes.items()}, config.options)
    assert file_sha256(exported) == file_sha256(loaded)


def test_refusals_are_one_line_exit_2_and_write_nothing(tmp_path: Path, small_onnx: Path) -> None:
    model = tmp_path / "mlp.onnx"
    shutil.copyfile(small_onnx, model)
    deploy = write_deploy(tmp_path, str(model), "ort-cpu")
    out = tmp_path / "repo"

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    done = run_cli("export", "triton", str(deploy), "-o", str(busy))
    assert done.returncode == 2 and "not empty" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert (busy / "keep.txt").read_text() == "mine"
    forced = run_cli("export", "triton", str(deploy), "-o", str(busy), "--force")
    assert forced.returncode == 0, forced.stderr
    assert not (busy / "keep.txt").exists() and (busy / "mlp" / "config.pbtxt").exists()

    mystery = json.loads(deploy.read_text())
    mystery["runtime"] = "mystery-npu"
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps(mystery))
    done = run_cli("export", "triton", str(odd), "-o", str(out))
    assert done.returncode == 2 and "no Triton" in done.stderr and len(done.stderr.strip().splitlines()) == 1

    plan = write_deploy(tmp_path, str(model), "tensorrt", "fp16")  # a plan is built where it runs, not here
    done = run_cli("export", "triton", str(plan), "-o", str(out))
    if done.returncode == 0:  # a machine with TensorRT and a GPU builds it
        assert (out / "mlp" / "1" / "model.plan").exists()
        shutil.rmtree(out)
    else:
        assert done.returncode == 2 and "cannot run here" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and not out.exists()

    import onnx

    changed = onnx.load(str(model))
    changed.doc_string = "retrained"  # a valid model, but not the one the deploy file was made for
    onnx.save(changed, str(model))
    done = run_cli("export", "triton", str(deploy), "-o", str(out))
    assert done.returncode == 2 and "sha256" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    model.unlink()
    done = run_cli("export", "triton", str(deploy), "-o", str(out))
    assert done.returncode == 2 and "does not exist" in done.stderr
    done = run_cli("export", "kserve", str(deploy), "-o", str(tmp_path / "isvc.yaml"), "--storage-uri", "s3://b/r")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "isvc.yaml").exists()
    assert leftovers(tmp_path) == []


def test_python_backend_copies_and_pins_the_model(tmp_path: Path, small_onnx: Path) -> None:
    from rtpick.export.repository import export_triton

    model = tmp_path / "mlp.onnx"
    shutil.copyfile(small_onnx, model)
    deploy = write_deploy(tmp_path, str(model), "ort-cuda", options={"cuda_graph": True})  # rtpick-only option
    result = export_triton(deploy, tmp_path / "repo")
    version = tmp_path / "repo" / "mlp" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["deploy.json", "model.onnx", "model.py"]
    code = (version / "model.py").read_text()
    assert file_sha256(version / "model.onnx") in code and file_sha256(version / "deploy.json") in code
    assert json.loads((version / "deploy.json").read_text())["model"]["source"] == "model.onnx"
    compile(code, "model.py", "exec")  # valid Python
    assert parse_pbtxt((tmp_path / "repo" / "mlp" / "config.pbtxt").read_text()).backend == "python"
    assert any("cuda_graph" in note for note in result.notes)


@pytest.mark.skipif(not torch_available(), reason="torch is not installed")
def test_libtorch_export_matches_the_session(tmp_path: Path) -> None:
    import torch

    deploy = write_deploy(tmp_path, "rtpick:digits", "torch-cpu")
    done = run_cli("export", "triton", str(deploy), "-o", str(tmp_path / "repo"))
    assert done.returncode == 0, done.stderr
    assert "INPUT__0 = image" in (tmp_path / "repo" / "README.md").read_text()
    traced = torch.jit.load(str(tmp_path / "repo" / "rtpick_digits" / "1" / "model.pt"))
    feeds = {"image": np.random.default_rng(3).standard_normal((5, 1, 32, 32)).astype(np.float32)}
    with DeployConfig.read(deploy).build() as session:
        want = session.run(feeds)["logits"]
    with torch.no_grad():
        got = traced(torch.from_numpy(feeds["image"]))[0].numpy()
    np.testing.assert_array_equal(got, want)


def test_kserve_manifest(tmp_path: Path, small_onnx: Path) -> None:
    model = tmp_path / "mlp.onnx"
    shutil.copyfile(small_onnx, model)
    deploy = write_deploy(tmp_path, str(model), "ort-cuda", "fp16")
    out = tmp_path / "isvc.yaml"
    done = run_cli("export", "kserve", str(deploy), "-o", str(out), "--storage-uri", "s3://bucket/repo",
                   "--target-rps", "5000")
    assert done.returncode == 0, done.stderr
    document = yaml.safe_load(out.read_text())
    assert missing_fields(document) == []
    predictor = document["spec"]["predictor"]
    assert predictor["model"]["modelFormat"]["name"] == "triton"
    assert predictor["model"]["protocolVersion"] == "v2"
    assert predictor["model"]["storageUri"] == "s3://bucket/repo"
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (3, 5)  # 5000 / 2000 per replica, x2 for bursts
    assert predictor["model"]["resources"]["limits"]["memory"] == "450Mi"
    again = run_cli("export", "kserve", str(deploy), "-o", str(out), "--storage-uri", "s3://bucket/repo")
    assert again.returncode == 2 and "--force" in again.stderr
    bad = run_cli("export", "kserve", str(deploy), "-o", str(tmp_path / "x.yaml"), "--storage-uri", "bucket/repo")
    assert bad.returncode == 2 and "URI" in bad.stderr
    blind = write_deploy(tmp_path, str(model), "ort-cpu", measured={})
    done = run_cli("export", "kserve", str(blind), "-o", str(tmp_path / "y.yaml"), "--storage-uri", "s3://b/r",
                   "--target-rps", "10")
    assert done.returncode == 2 and "throughput" in done.stderr
    cpu = run_cli("export", "kserve", str(blind), "-o", str(tmp_path / "z.yaml"), "--storage-uri", "s3://b/r")
    assert cpu.returncode == 0, cpu.stderr
    document = yaml.safe_load((tmp_path / "z.yaml").read_text())
    assert missing_fields(document) == [] and "nvidia.com/gpu" not in document["spec"]["predictor"]["model"][
        "resources"]["limits"]


@pytest.mark.skipif(not torch_available(), reason="torch is not installed")
def test_half_precision_trace_casts_the_weights(tmp_path: Path) -> None:
    """torch-cuda:fp16 eager traces with fp16 weights (on the CPU here), fp32 in and out as rtpick runs it."""
    import torch

    from rtpick.export.repository import export_triton

    deploy = write_deploy(tmp_path, "rtpick:digits", "torch-cuda", "fp16", options={"channels_last": False})
    result = export_triton(deploy, tmp_path / "repo")
    assert parse_pbtxt((tmp_path / "repo" / result.model_name / "config.pbtxt").read_text()).platform == \
        "pytorch_libtorch"
    traced = torch.jit.load(str(tmp_path / "repo" / result.model_name / "1" / "model.pt"))
    assert {p.dtype for p in traced.parameters()} == {torch.float16}
    image = np.random.default_rng(4).standard_normal((2, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        got = traced(torch.from_numpy(image))[0]
    assert got.dtype == torch.float32
    with DeployConfig.read(write_deploy(tmp_path, "rtpick:digits", "torch-cpu")).build() as session:
        want = session.run({"image": image})["logits"]
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-2, atol=2e-2)


def test_an_input_with_a_range_warms_up_from_a_file_in_it(tmp_path: Path) -> None:
    """Triton fails to load a model whose warm-up fails; a deploy file's input_ranges (an input that needs
    particular values, like Silero VAD's sample rate) become a file under warmup/ with values in the range, named
    by the input's position: the name comes from the model file, and one with ../ in it writes nothing outside."""
    import onnx
    from onnx import TensorProto, helper

    from rtpick.export.repository import export_triton

    rate = "../../rate"  # a name from someone else's model file
    graph = helper.make_graph([helper.make_node("Mul", ["x", rate], ["y"])], "rated",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                               helper.make_tensor_value_info(rate, TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model_path = tmp_path / "rated.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(model_path))
    spec = load_model(str(model_path)).spec
    deploy = DeployConfig(str(model_path), spec.sha256, spec.name, "ort-cpu", "fp32",
                          get_runtime("ort-cpu").check_options({}), shapes={"x": [1, 4], rate: []},
                          measured=dict(MEASURED), input_ranges={rate: [16000.0, 16001.0]})
    path = tmp_path / "deploy.json"
    deploy.write(path)
    assert DeployConfig.read(path).input_ranges == {rate: [16000.0, 16001.0]}
    result = export_triton(path, tmp_path / "repo")
    folder = tmp_path / "repo" / result.model_name
    config = parse_pbtxt((folder / "config.pbtxt").read_text())
    warm = config.model_warmup[0].inputs
    assert warm[rate].input_data_file == "input_1" and list(warm[rate].dims) == [1]
    assert warm["x"].random_data
    assert np.frombuffer((folder / "warmup" / "input_1").read_bytes(), np.int64).tolist() == [16000]
    assert sorted(p.name for p in (folder / "warmup").iterdir()) == ["input_1"]
    assert not (tmp_path / "rate").exists() and not (tmp_path / "repo" / "rate").exists()


def test_a_damaged_input_range_in_a_deploy_file_is_one_line(tmp_path: Path) -> None:
    from rtpick.errors import RtpickError

    data = DeployConfig("m.onnx", "ab" * 32, "m", "ort-cpu", "fp32").to_dict() | {"input_ranges": {"sr": [5, 1]}}
    with pytest.raises(RtpickError, match="damaged deploy file.*not below"):
        DeployConfig.from_dict(data)
