"""runtimes/fp8 on the CPU: quantise/dequantise bounds, the layer's math against a float32 emulation, the module
tree after the swap, the refusals, the precision's declaration and the never-slower verdicts. The FP8 GEMM on
a GPU is exercised by benchmarks/gpu_energy_fp8.py (and the GPU test below, which skips without one)."""

from __future__ import annotations

import pytest

from rtpick.errors import MissingRuntime, RtpickError
from rtpick.runtimes import fp8
from rtpick.runtimes.registry import get_runtime, parse_config

torch = pytest.importorskip("torch")
if not hasattr(torch, "float8_e4m3fn"):  # pragma: no cover - torch < 2.1
    pytest.skip("this torch has no float8 types", allow_module_level=True)


def _cpu_rowwise_scaled_mm() -> bool:
    """Whether this torch's CPU `_scaled_mm` takes row-wise scales (2.13 does; 2.11's asserts per-tensor only)."""
    a = torch.ones(16, 16).to(torch.float8_e4m3fn)
    b = torch.ones(16, 16).to(torch.float8_e4m3fn).t()
    try:
        torch._scaled_mm(a, b, scale_a=torch.ones(16, 1), scale_b=torch.ones(1, 16), out_dtype=torch.bfloat16)
    except (RuntimeError, TypeError):
        return False
    return True


needs_cpu_rowwise = pytest.mark.skipif(not _cpu_rowwise_scaled_mm(),
                                       reason="this torch's CPU _scaled_mm has no row-wise scales (torch 2.11 "
                                              "asserts per-tensor only); the GPU test covers the layer there")


def test_round_trip_error_is_within_e4m3_bounds() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 256) * torch.logspace(-3, 3, 64).unsqueeze(1)  # rows of very different magnitude
    q, scale = fp8.quantise_rowwise(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (64, 1) and scale.dtype == torch.float32
    back = fp8.dequantise(q, scale)
    # e4m3: 3 mantissa bits, so a normal value rounds within 2^-4 of itself; below 2^-6 (subnormal) the step is
    # 2^-9 of the scale, so the error is within 2^-10 of the scale
    bound = torch.maximum(x.abs() * 2.0**-4, scale * 2.0**-10) * (1 + 1e-6)
    assert bool(((back - x).abs() <= bound).all())
    # each row's largest magnitude maps to 448 (e4m3's largest) and comes back as itself
    assert torch.allclose(back.abs().amax(dim=1), x.abs().amax(dim=1), rtol=1e-5)


def test_zero_rows_stay_zero_and_finite() -> None:
    x = torch.zeros(3, 32)
    q, scale = fp8.quantise_rowwise(x)
    assert bool(torch.isfinite(scale).all()) and fp8.dequantise(q, scale).abs().sum().item() == 0.0


@needs_cpu_rowwise
def test_float8_linear_matches_a_float32_emulation_and_stays_near_the_original() -> None:
    torch.manual_seed(1)
    linear = torch.nn.Linear(64, 100).to(torch.bfloat16)  # 100 outputs: padded to 112, sliced back
    layer = fp8.float8_linear(linear)
    x = torch.randn(2, 5, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        y = layer(x)
        assert y.shape == (2, 5, 100) and y.dtype == torch.bfloat16
        xq, xs = fp8.quantise_rowwise(x.reshape(-1, 64))
        wq, ws = fp8.quantise_rowwise(linear.weight.detach())
        emulated = fp8.dequantise(xq, xs) @ fp8.dequantise(wq, ws).t() + linear.bias.float()
        assert torch.allclose(y.float().reshape(-1, 100), emulated, rtol=2e-2, atol=2e-2)
        exact = torch.nn.functional.linear(x.float(), linear.weight.float(), linear.bias.float())
        rel = ((y.float() - exact).norm() / exact.norm()).item()
    assert rel < 0.08, rel  # two e4m3 roundings (about 3-4% each, norm-wise) and bf16 out


@needs_cpu_rowwise
def test_swap_replaces_only_the_linear_layers_fp8_can_serve() -> None:
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.Flatten(), torch.nn.LayerNorm(8 * 6 * 6),
        torch.nn.Linear(8 * 6 * 6, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10), torch.nn.Linear(10, 32),
    ).to(torch.bfloat16)
    conv, norm = model[0], model[2]
    conv_weight = conv.weight.detach().clone()
    swapped, report = fp8.swap_linear_layers(model)
    assert swapped is model
    assert report.converted == ["3", "5"] and report.skipped == {"6": "in_features 10 is not a multiple of 16"}
    assert report.padded == ["5 (10 -> 16)"]
    assert swapped[0] is conv and swapped[2] is norm and torch.equal(conv.weight, conv_weight)
    assert type(swapped[6]) is torch.nn.Linear and type(swapped[3]).__name__ == "Float8Linear"
    assert swapped[3].weight_fp8.dtype == torch.float8_e4m3fn and swapped[3].weight_scale.shape == (1, 64)
    assert "2 Linear layers compute in FP8" in report.describe() and "6 (in_features 10" in report.describe()
    with torch.inference_mode():
        assert swapped(torch.rand(2, 3, 8, 8, dtype=torch.bfloat16)).shape == (2, 32)


def test_attention_projections_read_directly_are_left_alone() -> None:
    layer = torch.nn.TransformerEncoderLayer(64, 4, 128, batch_first=True).to(torch.bfloat16)
    with pytest.raises(MissingRuntime, match="not available for this model: FP8 applies to nn.Linear") as info:
        fp8.swap_linear_layers(layer, "torch-compile-cuda:fp8")
    assert "MultiheadAttention reads its weights directly" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_model_without_linear_layers_is_refused_with_the_reason() -> None:
    with pytest.raises(MissingRuntime, match="the model has no nn.Linear layer"):
        fp8.swap_linear_layers(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1)))


def _conv_net_with_a_classifier() -> torch.nn.Module:
    """A ResNet's shape in small: convolutions do the work, one Linear layer classifies."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3, padding=1),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 16)).to(torch.bfloat16)


def test_fp8_is_unavailable_where_its_linear_layers_do_too_little_of_the_work() -> None:
    """Amdahl: FP8 at twice a bf16 GEMM on 0.1% of the FLOPs cannot make the model faster, so the build is
    refused before anything is compiled, with the share and the bound; the same layer in an MLP is swapped."""
    sample = [torch.zeros(1, 3, 32, 32, dtype=torch.bfloat16)]
    module = _conv_net_with_a_classifier()
    share = fp8.linear_flop_share(module, sample, ["5"])
    assert share is not None and 0 < share < 0.01
    with pytest.raises(MissingRuntime, match=r"do 0\.\d% of its matmul/conv FLOPs.*at most 1\.00x faster") as info:
        fp8.swap_linear_layers(module, "torch-compile-cuda:fp8", sample=sample)
    assert "\n" not in str(info.value)
    assert not any(isinstance(m, fp8._float8_linear_type()) for m in module.modules())  # refused before the swap

    mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64)).to(torch.bfloat16)
    assert fp8.linear_flop_share(mlp, [torch.zeros(8, 64, dtype=torch.bfloat16)], ["0", "2"]) == pytest.approx(1.0)
    _, report = fp8.swap_linear_layers(mlp, sample=[torch.zeros(8, 64, dtype=torch.bfloat16)])
    assert report.converted == ["0", "2"]


def test_fp8_is_a_precision_of_torch_compile_cuda_only() -> None:
    assert parse_config("torch-compile-cuda:fp8") == ("torch-compile-cuda", "fp8")
    assert "fp8" in get_runtime("torch-compile-cuda").describe()["precisions"]
    for other in ("torch-cuda", "torch-cpu", "ort-cpu"):
        with pytest.raises(RtpickError, match="does not support fp8"):
            parse_config(f"{other}:fp8")


def test_fp8_tolerance_is_the_8_bit_gate() -> None:
    from rtpick.comparison.policy import TOLERANCES

    assert TOLERANCES["fp8"] == TOLERANCES["int8"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_a_gpu_fp8_is_unavailable_in_one_line() -> None:
    state = get_runtime("torch-compile-cuda").precision_availability("fp8")
    assert not state.ok and state.reason == "FP8 runs on CUDA GPUs and torch sees none"


def test_old_gpus_are_refused_by_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100")
    assert fp8.device_support() == ("FP8 needs a GPU with FP8 tensor cores (compute capability >= 8.9: Ada, "
                                    "Hopper or later); NVIDIA A100 is 8.0")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fp8_linear_on_the_gpu() -> None:  # pragma: no cover - no GPU in CI
    if fp8.device_support():
        pytest.skip(fp8.device_support())
    linear = torch.nn.Linear(768, 3072).to("cuda", torch.bfloat16)
    x = torch.randn(256, 768, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        y = fp8.float8_linear(linear)(x).float()
        exact = linear(x).float()
    assert ((y - exact).norm() / exact.norm()).item() < 0.08


def _record(precision: str, mean: float, ci: tuple[float, float] | None = None, batch: int = 64) -> dict:
    latency = {"mean": mean, "ci": {"p50": list(ci)} if ci else {}}
    return {"config": f"torch-compile-cuda:{precision}", "runtime": "torch-compile-cuda", "precision": precision,
            "batch": batch, "scenario": "offline", "status": "ok", "metrics": {"latency_ms": latency}}


def test_never_slower_verdicts() -> None:
    records = [_record("bf16", 10.0, (9.9, 10.1)), _record("fp16", 9.0, (8.9, 9.1)), _record("fp8", 7.5, (7.4, 7.6))]
    (verdict,) = fp8.fp8_speed_verdicts(records)
    assert verdict["faster"] is True and verdict["baseline"] == "torch-compile-cuda:fp16"
    assert verdict["ratio"] == pytest.approx(1.2)
    assert verdict["words"] == "fp8 faster here: 1.20x torch-compile-cuda:fp16"
    slower = fp8.fp8_speed_verdicts([_record("bf16", 9.3), _record("fp8", 10.0)])[0]
    assert slower["faster"] is False and slower["words"] == "fp8 not faster here: 0.93x torch-compile-cuda:bf16"
    noisy = fp8.fp8_speed_verdicts([_record("bf16", 10.0, (9.0, 11.0)), _record("fp8", 9.8, (8.8, 10.8))])[0]
    assert noisy["faster"] is False and noisy["words"].endswith("(within the 95% intervals)")
    alone = fp8.fp8_speed_verdicts([_record("fp8", 5.0), _record("bf16", 4.0, batch=1)])[0]
    assert alone["faster"] is None and alone["words"].startswith("fp8 not compared")


@needs_cpu_rowwise
def test_bundled_digits_classifier_passes_the_fp8_gate() -> None:
    """The accuracy gate on real data: the bundled classifier's two Linear layers in FP8 (CPU torch._scaled_mm)
    against fp32, over the held-out images, judged by compare's fp8 tolerance."""
    from pathlib import Path

    import numpy as np

    import rtpick.assets
    from rtpick.comparison.metrics import output_metrics, within_tolerance
    from rtpick.sources import load_model

    data = np.load(Path(rtpick.assets.__file__).parent / "digits_eval.npz")
    images = torch.from_numpy(data["image"][:256])
    module = load_model("rtpick:digits").torch_module().eval()
    with torch.inference_mode():
        reference = module(images).numpy()
        swapped, report = fp8.swap_linear_layers(module.to(torch.bfloat16))
        logits = swapped(images.to(torch.bfloat16)).float().numpy()
    assert len(report.converted) == 2
    metrics = output_metrics(reference, logits, data["label"][:256])
    assert within_tolerance(metrics, "fp8"), metrics["reasons"]
    assert metrics["top1_agreement"] >= 0.97 and metrics["cosine"] > 0.995
