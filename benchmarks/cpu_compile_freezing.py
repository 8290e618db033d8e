"""Does Inductor freezing change torch-compile-cpu's speed? Frozen against unfrozen, built by rtpick itself.

`recommend` builds torch-compile-cpu with and without freezing only where freezing fails (issue 17: on a 2-core
CPU each variant costs one compile per batch size of an offline sweep, 3-4 s each, and the unfrozen one was
half of a cold `--min-throughput` search's probing). This measures what that costs an answer: each model and
precision at batch 1 and 16, both variants built by `rtpick.runtimes` (the sessions `recommend` measures), timed
in interleaved rounds (order alternating, each slot ~0.1 s of calls after one untimed call); the figure is the
median over rounds of unfrozen time / frozen time (> 1: freezing is faster).

    PYTHONPATH=src python benchmarks/cpu_compile_freezing.py > benchmarks/results/cpu_compile_freezing.md
    PYTHONPATH=src python benchmarks/cpu_compile_freezing.py torchvision:resnet50   # where torchvision is
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn

from rtpick.runtimes.registry import get_runtime
from rtpick.sources import load_model

ROUNDS = 11
SLOT_S = 0.1


def _mobile_block(inp: int, out: int, stride: int) -> nn.Module:
    hidden = inp * 4
    return nn.Sequential(
        nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.Hardswish(),
        nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
        nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out))


def mobile_cnn() -> nn.Module:
    """Inverted residual blocks (1x1 expand, depthwise 3x3, 1x1 project, BN after each): MobileNetV2's pattern."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), _mobile_block(16, 24, 2),
                         _mobile_block(24, 32, 2), _mobile_block(32, 64, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, 10)).eval()


def encoder() -> nn.Module:
    """Two transformer encoder layers (d=128, 4 heads) and a linear head: a MatMul-heavy model."""
    layer = nn.TransformerEncoderLayer(128, 4, 256, batch_first=True)
    return nn.Sequential(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), nn.Flatten(),
                         nn.Linear(128 * 16, 4)).eval()


def models(extra: list[str]) -> dict[str, Any]:
    torch.manual_seed(0)
    return {**{name: load_model(name) for name in extra},"rtpick:digits": load_model("rtpick:digits"),
            "mobile-cnn 3x96x96": load_model(mobile_cnn(), input_specs={"x": (1, 3, 96, 96)}),
            "encoder 16x128": load_model(encoder(), input_specs={"x": (1, 16, 128)})}


def ratio(sessions: dict[bool, Any], feeds: dict[str, Any]) -> tuple[float, float, float]:
    """(median, min, max) over interleaved rounds of unfrozen time / frozen time."""
    for session in sessions.values():
        session.run(feeds)
    ratios = []
    for number in range(ROUNDS):
        seconds = {}
        for frozen in ((False, True) if number % 2 else (True, False)):
            calls, start = 0, time.perf_counter()
            while time.perf_counter() - start < SLOT_S:
                sessions[frozen].run(feeds)
                calls += 1
            seconds[frozen] = (time.perf_counter() - start) / calls
        ratios.append(seconds[False] / seconds[True])
    return statistics.median(ratios), min(ratios), max(ratios)


def main() -> None:
    runtime = get_runtime("torch-compile-cpu")
    print("# torch-compile-cpu: unfrozen time / frozen time (> 1: freezing is faster)\n")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.2f}; "
          f"{ROUNDS} interleaved rounds of ~{SLOT_S:g} s per variant; median (min-max) of the per-round ratios.\n")
    print("| model | precision | batch | unfrozen / frozen |")
    print("|---|---|---|---|")
    for name, model in models(sys.argv[1:]).items():
        spec = model.spec.inputs[0]
        for precision in ("fp32", "bf16"):
            for batch in (1, 16):
                shape = (batch, *spec.shape[1:])
                shapes = {spec.name: shape}
                feeds = {spec.name: torch.randn(*shape).numpy()}
                sessions = {frozen: runtime.build(model, precision, shapes, freezing=frozen)
                            for frozen in (False, True)}
                mid, low, high = ratio(sessions, feeds)
                print(f"| {name} | {precision} | {batch} | {mid:.3f} ({low:.3f}-{high:.3f}) |", flush=True)
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
