"""FP8 (e4m3) Linear layers for ``torch-compile-cuda:fp8``: weights quantised once at build, activations per row.

Why this shape: on an H200, an FP8 GEMM beats bf16 only where the layer is compute-bound (large Linear layers,
e.g. BERT's) and only if the cast of the activations to FP8 costs nearly nothing; a separate cast kernel before
every GEMM made FP8 slower than fp16 (../shared/GPU.md). So the activation quantisation is written as plain
tensor ops in the layer's forward and the whole model runs under torch.compile, where Inductor fuses the row
amax, the scaling and the cast into one kernel, or into the kernel that produced the activation (the same
recipe as torchao's float8 dynamic-activation inference, written here in a few lines).

The arithmetic of `Float8Linear` (x: [M, K] bf16, W: [N, K]):

    s_x[m] = max_k |x[m, k]| / 448      (one scale per row of x, float32; 448 is e4m3's largest finite value)
    s_w[n] = max_k |W[n, k]| / 448      (one scale per output channel of W, computed once at build)
    y = (x / s_x) in e4m3  @  (W / s_w) in e4m3 ^T  * s_x[m] * s_w[n]  + b     (torch._scaled_mm, bf16 out)

with Hopper's fast FP8 accumulation (``use_fast_accum``, as inference recipes use it): 6% faster end to end in
the H200 probe below (3.403 -> 3.211 ms), with the same output error (rel L2 0.0390 against fp32 either way).

Everything that is not a Linear layer stays bf16. A Linear layer is left in bf16 (and said so) where FP8 cannot
serve it: in_features not a multiple of 16 (the FP8 GEMM needs it), or its weights are read directly by its
parent instead of through its forward (nn.MultiheadAttention's out_proj; nn.Transformer*Layer's fused fast
path). out_features that are not a multiple of 16 are padded with zero rows once, the output sliced back.
A model with no layer FP8 serves is refused with the reason: never a bf16 model under the fp8 name.

The never-slower rule (`fp8_speed_verdicts`): FP8 is worth choosing only where it is measured faster than the
best fp16/bf16 configuration of the same runtime at the same batch and scenario; `recommend` must never rank an
fp8 row above that baseline for speed when the verdict is "not faster" (see the function's docstring).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtpick.errors import MissingRuntime

E4M3_MAX = 448.0  # largest finite float8_e4m3fn
MIN_CAPABILITY = (8, 9)  # FP8 tensor cores: Ada (8.9), Hopper (9.0) and later
ALIGN = 16  # torch._scaled_mm wants K and N multiples of 16
SCALE_FLOOR = 1e-12  # an all-zero row keeps a finite scale (its values quantise to zero)
# Inductor settings for an fp8 build. multi_kernel lets Inductor keep a whole row in registers for the fused
# GELU/LayerNorm + row amax + FP8 cast (a "persistent" reduction) instead of looping over the row twice: on the
# H200, a 12-layer BERT-like encoder at batch 64 x 128 went from 3.757 ms (0.90x bf16's 3.391 ms) to 3.211 ms
# (1.06x); bf16 itself did not change (benchmarks/fp8_inductor_probe.py, results/h200/fp8-inductor-probe.txt).
INDUCTOR_CONFIG = {"triton.multi_kernel": 1}
# modules that read their child Linear layers' weights directly instead of calling them (so a swapped child would
# either break them or be bypassed): nn.MultiheadAttention (out_proj) and the Transformer layers' fast path
_READS_CHILD_WEIGHTS = ("MultiheadAttention", "TransformerEncoderLayer", "TransformerDecoderLayer")


def _torch() -> Any:
    import torch

    return torch


def device_support(device: Any = None) -> str:
    """Why FP8 cannot run on `device` with this torch, in one line; "" when it can."""
    torch = _torch()
    if not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        return f"this torch ({torch.__version__}) has no FP8 support (torch.float8_e4m3fn and torch._scaled_mm)"
    if not torch.cuda.is_available():
        return "FP8 runs on CUDA GPUs and torch sees none"
    capability = tuple(torch.cuda.get_device_capability(device))
    if capability < MIN_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        return (f"FP8 needs a GPU with FP8 tensor cores (compute capability >= {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}:"
                f" Ada, Hopper or later); {name} is {capability[0]}.{capability[1]}")
    return ""


def quantise_rowwise(x: Any) -> tuple[Any, Any]:
    """(x / s in float8_e4m3fn, s in float32 of shape [..., 1]) with s = amax of each row / 448."""
    torch = _torch()
    scale = x.abs().amax(dim=-1, keepdim=True).float().clamp(min=SCALE_FLOOR) / E4M3_MAX
    quantised = (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return quantised, scale


def dequantise(quantised: Any, scale: Any) -> Any:
    """The float32 values an FP8 tensor and its scales stand for (the reference for tests)."""
    return quantised.float() * scale


@functools.cache
def _float8_linear_type() -> type:
    torch = _torch()

    class Float8Linear(torch.nn.Module):
        """y = x W^T + b with x and W in FP8 e4m3 (x per row, W per output channel), accumulated by the FP8
        GEMM, y in `out_dtype`. Built from an nn.Linear, whose weight is quantised here, once."""

        def __init__(self, linear: Any, out_dtype: Any) -> None:
            super().__init__()
            self.in_features = int(linear.in_features)
            self.out_features = int(linear.out_features)
            self.out_dtype = out_dtype
            padded = -(-self.out_features // ALIGN) * ALIGN
            weight = linear.weight.detach()
            bias = None if linear.bias is None else linear.bias.detach().to(out_dtype)
            if padded != self.out_features:  # zero rows: their outputs are sliced away
                weight = torch.nn.functional.pad(weight, (0, 0, 0, padded - self.out_features))
                bias = None if bias is None else torch.nn.functional.pad(bias, (0, padded - self.out_features))
            quantised, scale = quantise_rowwise(weight)
            self.register_buffer("weight_fp8", quantised.contiguous())  # [N, K]; .t() is the column-major B
            self.register_buffer("weight_scale", scale.t().contiguous())  # [1, N]
            self.register_buffer("bias", bias)
            self.padded_features = padded

        def forward(self, x: Any) -> Any:
            rows = x.reshape(-1, self.in_features)
            x_fp8, x_scale = quantise_rowwise(rows)
            y = torch._scaled_mm(x_fp8, self.weight_fp8.t(), scale_a=x_scale, scale_b=self.weight_scale,
                                 bias=self.bias, out_dtype=self.out_dtype, use_fast_accum=True)
            if self.padded_features != self.out_features:
                y = y[:, : self.out_features]
            return y.reshape(*x.shape[:-1], self.out_features)

        def extra_repr(self) -> str:
            return (f"in_features={self.in_features}, out_features={self.out_features}, "
                    f"fp8=e4m3 (activations per row, weights per output channel), out={self.out_dtype}")

    return Float8Linear


def float8_linear(linear: Any, out_dtype: Any = None) -> Any:
    """An FP8 copy of one nn.Linear (see `Float8Linear`); outputs in `out_dtype` (default bf16)."""
    torch = _torch()
    return _float8_linear_type()(linear, out_dtype or torch.bfloat16)


@dataclass
class SwapReport:
    """Which Linear layers became FP8 and which stayed in bf16, with why."""

    converted: list[str] = field(default_factory=list)
    padded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        text = (f"fp8: {len(self.converted)} Linear layers compute in FP8 e4m3 (activations scaled per row, weights "
                "per output channel, bf16 out), everything else in bf16")
        if self.padded:
            text += f"; out_features padded to a multiple of {ALIGN} for {', '.join(self.padded)}"
        if self.skipped:
            text += "; left in bf16: " + "; ".join(f"{name} ({why})" for name, why in self.skipped.items())
        return text


def _why_not(name: str, linear: Any, parent: Any) -> str:
    if type(parent).__name__ in _READS_CHILD_WEIGHTS:
        return f"{type(parent).__name__} reads its weights directly, not through the layer"
    if linear.weight is None or not linear.weight.is_floating_point():
        return "its weight is not a floating-point tensor"
    if linear.in_features % ALIGN:
        return f"in_features {linear.in_features} is not a multiple of {ALIGN}"
    return ""


# Amdahl's bound for FP8 on Linear layers only: Hopper's dense FP8 tensor-core peak is twice its bf16 peak, so a
# model whose FP8-capable Linear layers do a share s of its GEMM/conv FLOPs gains at most 1 / (1 - s / 2).
FP8_GEMM_BEST_SPEEDUP = 2.0
FP8_MIN_GAIN = 1.05  # below this bound (s < 9.5%) fp8 cannot be worth a build: it is unavailable for the model


def linear_flop_share(module: Any, sample: Sequence[Any], names: Sequence[str]) -> float | None:
    """The share of one forward's FLOPs (torch's FLOP counter: matmuls and convolutions) done by the Linear
    layers `names`, or None when the counter sees none."""
    torch = _torch()
    from torch.utils.flop_counter import FlopCounterMode

    wanted = set(names)
    linear: list[int] = []
    hooks = [child.register_forward_hook(
        lambda mod, args, out: linear.append(2 * args[0].numel() * mod.out_features))
        for name, child in module.named_modules() if name in wanted and isinstance(child, torch.nn.Linear)]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(*sample)
    finally:
        for hook in hooks:
            hook.remove()
    total = counter.get_total_flops()
    return sum(linear) / total if total else None


def _refuse_small_share(module: Any, sample: Sequence[Any], names: Sequence[str], what: str) -> None:
    """`MissingRuntime` where the Linear layers FP8 would serve cannot make the model measurably faster."""
    share = linear_flop_share(module, sample, names)
    if share is None:
        return
    bound = 1.0 / (1.0 - share * (1.0 - 1.0 / FP8_GEMM_BEST_SPEEDUP))
    if bound < FP8_MIN_GAIN:
        raise MissingRuntime(
            f"{what} is not available for this model: its {len(names)} FP8-capable Linear layers do {share:.1%} "
            f"of its matmul/conv FLOPs, so FP8 (at most {FP8_GEMM_BEST_SPEEDUP:g}x a bf16 GEMM) could make it at "
            f"most {bound:.2f}x faster; fp8 pays where Linear layers dominate (transformers)")


def swap_linear_layers(module: Any, what: str = "fp8", out_dtype: Any = None,
                       sample: Sequence[Any] | None = None) -> tuple[Any, SwapReport]:
    """Replace every nn.Linear FP8 can serve by a `Float8Linear`, in place; (module, report).

    Raises `MissingRuntime` (one line, "unavailable") when the GPU or torch lacks FP8, when no layer qualifies,
    or, given a `sample` input (the module's positional inputs), when the qualifying layers do too small a
    share of the model's FLOPs for FP8 to pay (a ResNet's one classifier layer: the build and the measurement
    would be spent on a configuration that cannot win).
    """
    torch = _torch()
    try:
        device = next(module.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    if device.type == "cuda":
        reason = device_support(device)
        if reason:
            raise MissingRuntime(f"{what} is not available here: {reason}")
    report = SwapReport()
    qualifying = []  # (parent, attribute, layer, dotted name) of every Linear FP8 can serve
    for parent_name, parent in list(module.named_modules()):
        for child_name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear):
                continue
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            why = _why_not(name, child, parent)
            if why:
                report.skipped[name] = why
            else:
                qualifying.append((parent, child_name, child, name))
    if sample is not None and qualifying:
        _refuse_small_share(module, sample, [name for *_, name in qualifying], what)
    for parent, child_name, child, name in qualifying:
        swapped = float8_linear(child, out_dtype)
        if swapped.padded_features != swapped.out_features:
            report.padded.append(f"{name} ({swapped.out_features} -> {swapped.padded_features})")
        setattr(parent, child_name, swapped)
        report.converted.append(name)
    if not report.converted:
        skipped = "; ".join(f"{n}: {w}" for n, w in report.skipped.items()) or "the model has no nn.Linear layer"
        raise MissingRuntime(f"{what} is not available for this model: FP8 applies to nn.Linear layers and none "
                             f"qualifies ({skipped})")
    return module, report


# ------------------------------------------------------------------------------------- the never-slower rule


BASELINE_PRECISIONS = ("fp16", "bf16")


def fp8_speed_verdicts(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """For every measured fp8 record, whether it beat the best fp16/bf16 record of the same runtime, batch and
    scenario: ``{"config", "batch", "baseline", "ratio", "faster", "words"}``.

    ratio = baseline mean latency / fp8 mean latency (at one batch, the throughput ratio). "faster" needs
    ratio > 1 and, where both records carry p50 95% intervals, intervals that do not overlap; otherwise the words
    say "fp8 not faster here: 0.93x torch-compile-cuda:bf16". How `recommend` must use it (the lead wires it):
    an fp8 row whose verdict is not faster is never ranked for speed: it is listed with these words as its
    reason, under the baseline, whatever its own figures; with no baseline measured, fp8 is "not compared" and
    ranked only if the user asked for fp8 alone.
    """
    def mean_ms(record: Mapping[str, Any]) -> float | None:
        latency = (record.get("metrics") or {}).get("latency_ms") or {}
        value = latency.get("mean")
        return float(value) if isinstance(value, int | float) and value > 0 else None

    def p50_ci(record: Mapping[str, Any]) -> tuple[float, float] | None:
        ci = (((record.get("metrics") or {}).get("latency_ms") or {}).get("ci") or {}).get("p50")
        return (float(ci[0]), float(ci[1])) if ci else None

    ok = [r for r in records if r.get("status") == "ok" and mean_ms(r) is not None]
    verdicts = []
    for record in ok:
        if record.get("precision") != "fp8":
            continue
        same = [r for r in ok if r.get("precision") in BASELINE_PRECISIONS and r.get("runtime") == record.get("runtime")
                and r.get("batch") == record.get("batch") and r.get("scenario") == record.get("scenario")]
        verdict: dict[str, Any] = {"config": record.get("config"), "batch": record.get("batch")}
        if not same:
            verdicts.append({**verdict, "baseline": None, "ratio": None, "faster": None,
                             "words": "fp8 not compared: no fp16/bf16 configuration of the same runtime measured"})
            continue
        best = min(same, key=lambda r: mean_ms(r) or float("inf"))
        ratio = float(mean_ms(best) or 0) / float(mean_ms(record) or 1)
        mine, theirs = p50_ci(record), p50_ci(best)
        separated = mine is None or theirs is None or mine[1] < theirs[0]
        faster = ratio > 1.0 and separated
        baseline = best.get("config") or f"{best.get('runtime')}:{best.get('precision')}"
        words = (f"fp8 faster here: {ratio:.2f}x {baseline}" if faster else
                 f"fp8 not faster here: {ratio:.2f}x {baseline}"
                 + ("" if ratio <= 1.0 or separated else " (within the 95% intervals)"))
        verdicts.append({**verdict, "baseline": baseline, "ratio": ratio, "faster": faster, "words": words})
    return verdicts
