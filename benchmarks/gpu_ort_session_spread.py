"""How much two ONNX Runtime CUDA sessions of the same model differ from each other, next to what rtpick adds.

The question behind it: rtpick's ort-cuda:tf32 session measured 1.7-7.5% slower than a direct ONNX Runtime call
at batch 1 in three machine starts, while ort-cuda:fp32 (the same code path) was within 1%. If independent direct
sessions differ from each other by as much, the difference is the session (cuDNN's per-session algorithm
search), not rtpick. Several direct sessions and one rtpick session per setting, ResNet-50, batch 1, input
already on the GPU, IO binding into torch tensors; timed as in gpu_proof.py (CUDA-event pairs, every session
alternating in rounds, medians), under cuDNN's exhaustive search (ONNX Runtime's default and rtpick's) and its
heuristic choice.

    PYTHONPATH=/tmp/site:src python benchmarks/gpu_ort_session_spread.py --out ort-session-spread.json
    PYTHONPATH=/tmp/site:src python benchmarks/gpu_ort_session_spread.py --only-attribution --out ort-attribution.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_proof import interleaved, load, ort_io_binding_call, paired_overhead, waits_if_busy, write  # noqa: E402


def direct_session(path: str, precision: str, search: str) -> Any:
    import onnxruntime as ort

    options = {"use_tf32": "1" if precision == "tf32" else "0", "cudnn_conv_algo_search": search}
    return ort.InferenceSession(path, providers=[("CUDAExecutionProvider", options)])


def breakdown(model: Any, x: Any, side_stream: bool) -> list[dict[str, Any]]:
    """What in rtpick's call costs, with deterministic sessions (fp32, heuristic cuDNN choice): a direct call, a
    direct call that first waits for torch's stream on the host (as rtpick's IO-binding path does before every
    run), one that asks first and waits only if that stream is busy, and rtpick's session; on a side stream also a
    direct session that computes on torch's stream (ONNX Runtime's `user_compute_stream`, so no wait is needed).
    Torch's current stream is either the legacy default stream (what a caller has unless they choose one) or a side
    stream; the timing events are recorded on it. 20 rounds of 10 calls; each variant against the direct call as
    a ratio paired by round, with a 95% interval (gpu_proof.paired_overhead)."""
    import contextlib

    import onnxruntime as ort
    import torch

    from rtpick.runtimes.registry import get_runtime

    path = str(model.onnx_path())
    stream = torch.cuda.Stream() if side_stream else torch.cuda.current_stream()
    with torch.cuda.stream(stream) if side_stream else contextlib.nullcontext():
        plain = ort_io_binding_call(direct_session(path, "fp32", "HEURISTIC"), x)
        waiting_session = ort_io_binding_call(direct_session(path, "fp32", "HEURISTIC"), x)
        asking_session = ort_io_binding_call(direct_session(path, "fp32", "HEURISTIC"), x)

        def waiting() -> Any:
            torch.cuda.current_stream().synchronize()
            return waiting_session()

        ours = get_runtime("ort-cuda").build(model, "fp32", {"input": tuple(x.shape)},
                                             cudnn_conv_algo_search="HEURISTIC")
        fns = {"direct": plain, "direct + host wait for torch's stream": waiting,
               "direct + wait only if torch's stream is busy": waits_if_busy(asking_session),
               "rtpick session": lambda: ours.run({"input": x})}
        if side_stream:
            shared = ort.InferenceSession(path, providers=[("CUDAExecutionProvider", {
                "use_tf32": "0", "cudnn_conv_algo_search": "HEURISTIC", "has_user_compute_stream": "1",
                "user_compute_stream": str(stream.cuda_stream)})])
            fns["direct on torch's stream (user_compute_stream)"] = ort_io_binding_call(shared, x)
        samples = interleaved(fns, warmup=20, rounds=20, per_round=10)
    ours.close()
    where = "side stream" if side_stream else "legacy default stream"
    return [{"stream": where, "breakdown": name, "median_ms": statistics.median(values), "samples": len(values),
             "vs_direct": paired_overhead(values, samples["direct"], 20)}
            for name, values in samples.items() if name != "direct"]


def attribution(model: Any, x: Any) -> list[dict[str, Any]]:
    """Session or call? rtpick's defaults (fp32, exhaustive cuDNN search) on the legacy default stream: rtpick's
    `run`, the direct IO-binding call made on rtpick's own InferenceSession (same session, no rtpick code per
    call), a direct session, and both kinds with one intra-op thread (ONNX Runtime's CPU thread pool spins after
    each run, and every session has its own). Paired by round against the direct session."""
    import onnxruntime as ort

    from rtpick.runtimes.registry import get_runtime

    path = str(model.onnx_path())
    shapes = {"input": tuple(x.shape)}
    ours = get_runtime("ort-cuda").build(model, "fp32", shapes)
    ours_one = get_runtime("ort-cuda").build(model, "fp32", shapes, threads=1)
    one_thread = ort.SessionOptions()
    one_thread.intra_op_num_threads = 1
    single = ort.InferenceSession(path, sess_options=one_thread, providers=[("CUDAExecutionProvider", {
        "use_tf32": "0", "cudnn_conv_algo_search": "EXHAUSTIVE"})])
    fns = {"direct": ort_io_binding_call(direct_session(path, "fp32", "EXHAUSTIVE"), x),
           "rtpick session.run": lambda: ours.run({"input": x}),
           "direct call on rtpick's InferenceSession": ort_io_binding_call(ours._session, x),
           "direct, 1 intra-op thread": ort_io_binding_call(single, x),
           "rtpick session.run, threads=1": lambda: ours_one.run({"input": x})}
    samples = interleaved(fns, warmup=20, rounds=20, per_round=10)
    ours.close()
    ours_one.close()
    return [{"attribution": name, "median_ms": statistics.median(values), "samples": len(values),
             "vs_direct": paired_overhead(values, samples["direct"], 20)}
            for name, values in samples.items() if name != "direct"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=3, help="direct sessions per setting")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--only-attribution", action="store_true", help="run the attribution part alone")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import torch

    from rtpick.runtimes.registry import get_runtime

    model, _ = load("resnet50")
    path = str(model.onnx_path())
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, 224, 224, device="cuda")
    if args.only_attribution:
        parts = attribution(model, x)
        write(args.out, {"model": "resnet50", "method": attribution.__doc__, "attribution": parts})
        for part in parts:
            low, high = part["vs_direct"]["ci95_pct"]
            print(f"{part['attribution']:<45} {part['median_ms']:>8.4f} ms {part['vs_direct']['pct']:>+6.2f}% "
                  f"[{low:+.1f}, {high:+.1f}]")
        return
    rows = []
    for precision in ("tf32", "fp32"):
        for search in ("EXHAUSTIVE", "HEURISTIC"):
            fns: dict[str, Any] = {}
            for index in range(args.sessions):
                fns[f"direct session {index + 1}"] = ort_io_binding_call(direct_session(path, precision, search), x)
            session = get_runtime("ort-cuda").build(model, precision, {"input": tuple(x.shape)},
                                                    cudnn_conv_algo_search=search)
            fns["rtpick session"] = lambda s=session: s.run({"input": x})
            samples = interleaved(fns, warmup=20, rounds=6, per_round=40)
            medians = {name: statistics.median(values) for name, values in samples.items()}
            direct = [v for k, v in medians.items() if k.startswith("direct")]
            for name, median in medians.items():
                rows.append({"precision": precision, "cudnn_conv_algo_search": search, "batch": args.batch,
                             "session": name, "median_ms": median, "samples": len(samples[name]),
                             "vs_fastest_direct_pct": 100 * (median - min(direct)) / min(direct),
                             "vs_median_direct_pct": 100 * (median - statistics.median(direct))
                             / statistics.median(direct)})
            session.close()
    parts = breakdown(model, x, side_stream=False) + breakdown(model, x, side_stream=True)
    write(args.out, {"model": "resnet50", "method": __doc__.split("\n\n")[1], "rows": rows, "breakdown": parts})
    for part in parts:
        low, high = part["vs_direct"]["ci95_pct"]
        print(f"fp32 HEURISTIC {part['stream']:<22} {part['breakdown']:<48} {part['median_ms']:>8.4f} ms "
              f"{part['vs_direct']['pct']:>+6.2f}% [{low:+.1f}, {high:+.1f}]")
    print(f"{'precision':<9} {'search':<10} {'session':<18} {'median ms':>10} {'vs fastest direct':>18} "
          f"{'vs median direct':>17}")
    for row in rows:
        print(f"{row['precision']:<9} {row['cudnn_conv_algo_search']:<10} {row['session']:<18} "
              f"{row['median_ms']:>10.4f} {row['vs_fastest_direct_pct']:>+17.2f}% "
              f"{row['vs_median_direct_pct']:>+16.2f}%")


if __name__ == "__main__":
    main()
