"""`rtpick serve`: build the session, warm it, serve HTTP (uvicorn) and gRPC on one event loop, drain on SIGTERM.

Why one loop for both protocols: each infer is an awaitable that the scheduler thread settles, so HTTP and gRPC
requests land in the same bounded queue and are merged into the same batches. SIGTERM (and Ctrl-C) starts a
drain: ready and new infers answer 503 at once, requests already admitted finish, and the process exits within
`exit_timeout_s` whether or not they did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from rtpick.errors import RtpickError
from rtpick.serve.served import ServedModel, ServeSettings
from rtpick.serve.shared_memory import SharedMemoryRegistry

log = logging.getLogger("rtpick.serve")
SWITCH_INTERVAL_S = 0.0005


@dataclass
class ServeOptions:
    """Flags of `rtpick serve`; None means: from the deploy file (or its stated default)."""

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = 8001  # None or 0: no gRPC
    max_batch: int | None = None
    max_queue_delay_ms: float | None = None
    max_queue_size: int | None = None
    timeout_ms: float | None = None
    batch_sizes: tuple[int, ...] | None = None
    max_request_bytes: int = 64 * 1024 * 1024
    reject_status: int = 503
    exit_timeout_s: float = 30.0
    name: str | None = None
    runtime_options: dict[str, str] | None = None  # --option items (MODEL -r only)
    shared_memory_regions: int = 64  # registered system shared-memory regions at most (0: the extension is off)
    shapes: dict[str, tuple[int, ...]] | None = None  # --shape items (MODEL -r only): the model's open dims
    warm_ranges: dict[str, tuple[float, float]] | None = None  # --input-range items: the warm-up's values


def load_target(target: str, runtime: str | None, max_batch: int | None = None,
                runtime_options: dict[str, str] | None = None,
                shapes: dict[str, tuple[int, ...]] | None = None) -> tuple[Any, Any, Any]:
    """(session, deploy, spec) for a deploy file, or for MODEL with ``-r rt:prec``, ``--option``s and
    ``--shape``s (an in-memory deploy at batch `max_batch`, default 8). A --shape fixes the dims the model leaves
    open, as it does for every other command; its leading dim, where the model's is open, is the batch axis the
    server fills, so the served max batch takes its place. Requests must bring those shapes (`fixed_input_dims`)."""
    from rtpick.deploy import DeployConfig, is_deploy_file
    from rtpick.model import has_batch_axis

    if is_deploy_file(target):
        if runtime or runtime_options or shapes:
            raise RtpickError(f"{target} fixes the configuration and its shapes; drop -r/--option/--shape or "
                              "edit the deploy file")
        deploy = DeployConfig.read(target)
        model = deploy.load_model()
        return deploy.build(model), deploy, model.spec
    from rtpick.model import resolve_shapes
    from rtpick.options import resolve_options
    from rtpick.runtimes.registry import get_runtime
    from rtpick.sources import load_model

    config = runtime or "ort-cpu:fp32"
    rt, _, precision = config.partition(":")
    chosen = resolve_options(runtime_options or {}, [config]).get(rt, {})
    model = load_model(target)
    # Served with a batch axis only where every tensor leads with an open dim (Triton's rule); otherwise each
    # request is one run at the shapes given (Silero VAD: `state` is [2, batch, 128], `sr` a scalar).
    batched = has_batch_axis(model.spec)  # then every input leads with the batch
    batch = (max_batch or 8) if batched else 1
    given = {name: (batch, *dims[1:]) if batched and dims else tuple(dims) for name, dims in (shapes or {}).items()}
    resolved = resolve_shapes(model.spec.inputs, given, batch if batched else None)
    deploy = DeployConfig(target, model.spec.sha256, model.spec.name, rt, precision or "fp32", options=chosen,
                          batch=batch, shapes={k: list(v) for k, v in resolved.items()}, command="rtpick serve")
    session = get_runtime(rt).build(model, deploy.precision, resolved, **chosen)
    return session, deploy, model.spec


def settings_for(deploy: Any, spec: Any, config: dict[str, Any], options: ServeOptions) -> ServeSettings:
    """Max batch, window, queue size and deadline: the flags where given, else the deploy file's policy."""
    from rtpick.export.triton import serving_policy

    max_batch = options.max_batch or max(int(config.get("max_batch_size") or 0), 1)
    if not config.get("max_batch_size"):
        max_batch = 1  # no batch axis: one request per run
    if max_batch < 1:
        raise RtpickError(f"--max-batch must be at least 1, not {max_batch}")
    policy = serving_policy(deploy, max_batch)
    delay_s = (options.max_queue_delay_ms / 1e3 if options.max_queue_delay_ms is not None
               else policy.max_queue_delay_us / 1e6)
    queue = options.max_queue_size or policy.max_queue_size
    if options.timeout_ms is not None:
        timeout_s = options.timeout_ms / 1e3 if options.timeout_ms > 0 else math.inf
    else:
        timeout_s = policy.budget_ms / 1e3 if policy.budget_ms else math.inf
    if delay_s < 0 or queue < 1 or not timeout_s > 0:
        raise RtpickError("--max-queue-delay-ms must be >= 0, --max-queue-size >= 1 and --timeout-ms > 0")
    sizes = options.batch_sizes
    if sizes is not None and (not sizes or min(sizes) < 1 or max(sizes) > max_batch):
        raise RtpickError(f"--batch-sizes must lie in 1..{max_batch}, not {list(sizes)}")
    if options.reject_status not in (429, 503):
        raise RtpickError(f"--reject-status must be 503 or 429, not {options.reject_status}")
    return ServeSettings(max_batch, delay_s, int(queue), timeout_s, tuple(sorted(sizes)) if sizes else None,
                         options.reject_status)


def served_names(config: dict[str, Any], spec: Any) -> dict[str, Any]:
    """The config with the model's own tensor names: Triton's libtorch backend renames them INPUT__0/OUTPUT__0,
    but this server feeds the session directly, so requests (and /config, which clients read) use the real ones."""
    renames = {}
    for key, tensors in (("input", spec.inputs), ("output", spec.outputs)):
        for entry, tensor in zip(config.get(key, []), tensors):
            renames[entry["name"]] = tensor.name
            entry["name"] = tensor.name
    for warm in config.get("model_warmup", []):
        warm["inputs"] = {renames.get(k, k): v for k, v in (warm.get("inputs") or {}).items()}
    return config


def fixed_input_dims(config: dict[str, Any], deploy: Any) -> dict[str, Any]:
    """The served inputs' open dims (-1 in the Triton config, where Triton takes any size) set to the deploy's
    shapes: this server stacks requests into batch buffers of one row shape, so a row's shape must be known, and
    /config tells clients which it is. Dims the deploy leaves open stay -1 (and the served model says so)."""
    batched = bool(config.get("max_batch_size"))
    for entry in config.get("input", []):
        given = deploy.shapes.get(entry["name"])
        row = list(given[1:] if batched else given) if given else None
        if row is not None and len(row) == len(entry["dims"]):
            entry["dims"] = [int(r) if d < 0 else d for d, r in zip(entry["dims"], row)]
    return config


def build_served(target: str, runtime: str | None, options: ServeOptions) -> ServedModel:
    from rtpick.export.triton import model_config_json

    session, deploy, spec = load_target(target, runtime, options.max_batch, options.runtime_options,
                                        options.shapes)
    config = fixed_input_dims(served_names(model_config_json(deploy, spec, options.name), spec), deploy)
    config.setdefault("max_batch_size", 0)  # proto3 JSON leaves out a zero; Triton's JSON and clients want it
    fixed = session.inputs[0].shape[0] if session.inputs and session.inputs[0].shape else None
    if isinstance(fixed, int) and config.get("max_batch_size"):  # a fixed batch: every batch padded to it
        options = ServeOptions(**{**options.__dict__, "max_batch": fixed, "batch_sizes": (fixed,)})
    settings = settings_for(deploy, spec, config, options)
    if config.get("max_batch_size"):  # what /config says and requests are checked against: the served max
        config["max_batch_size"] = settings.max_batch
    served = ServedModel(session, config, settings, warm_ranges=options.warm_ranges or deploy.ranges(),
                         index_limits={t.name: t.index_limit for t in spec.inputs if t.index_limit})
    served.shared_memory = SharedMemoryRegistry(options.shared_memory_regions) if options.shared_memory_regions \
        else None
    return served


class _Uvicorn:
    """uvicorn's Server with its exit signals turned into our drain (it would stop at once otherwise)."""

    @staticmethod
    def make(app: Any, options: ServeOptions, on_signal: Any) -> Any:
        import uvicorn

        class Server(uvicorn.Server):
            def handle_exit(self, sig: int, frame: Any) -> None:
                on_signal(sig)

        config = uvicorn.Config(app, host=options.host, port=options.port, log_level="warning",
                                access_log=False, lifespan="off", timeout_graceful_shutdown=1,
                                http="httptools" if _has("httptools") else "h11", loop="asyncio",
                                timeout_keep_alive=30, backlog=2048)
        return Server(config)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


async def serve_async(served: ServedModel, options: ServeOptions, started: Any = None) -> dict[str, Any]:
    """Serve until SIGTERM/SIGINT (or `served.draining` is set by a test); returns what the drain saw."""
    from rtpick.serve.http import build_app
    from rtpick.serve.metrics import Metrics

    metrics = Metrics(served.settings.max_batch)
    metrics.attach(served)
    app = build_app(served, metrics, options.max_request_bytes)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals: list[int] = []

    def on_signal(sig: int) -> None:
        signals.append(sig)
        served.draining = True
        loop.call_soon_threadsafe(stop.set)

    server = _Uvicorn.make(app, options, on_signal)
    grpc_server = None
    if options.grpc_port:
        import os

        # gRPC's C core logs its own line for a port it cannot bind; the one-line error below says it for us
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
        import grpc

        from rtpick.serve.grpc_service import add_to_server

        grpc_server = grpc.aio.server(options=[("grpc.max_receive_message_length", options.max_request_bytes),
                                               ("grpc.so_reuseport", 0)])
        add_to_server(grpc_server, served)
        try:  # older grpcio answers 0 for a port it cannot bind, newer raises RuntimeError
            bound = grpc_server.add_insecure_port(f"{_grpc_host(options.host)}:{options.grpc_port}")
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise RtpickError(f"cannot listen for gRPC on {options.host}:{options.grpc_port} (in use, or not an "
                              "address of this machine); choose another --grpc-port")
        await grpc_server.start()
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if task.done():
        if grpc_server is not None:
            await grpc_server.stop(0)
        raise RtpickError(f"cannot listen on {options.host}:{options.port}; choose another --port")
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests)
            loop.add_signal_handler(sig, on_signal, sig)
    if served.scheduler is None:  # listening already: ready answers 503 until the warm-up is done
        try:
            await loop.run_in_executor(None, served.start)
        except BaseException:  # a failed warm-up: close both listeners before the error reaches the user
            server.should_exit = True
            if grpc_server is not None:
                await grpc_server.stop(0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 2.0)
            raise
    if started is not None:
        started()
    print(f"rtpick serve: {served.name} ({served.session.config}) ready on http://{options.host}:{options.port}"
          + (f" and grpc {options.host}:{options.grpc_port}" if grpc_server else "")
          + f"; max batch {served.settings.max_batch}, queue {served.settings.max_queue}", file=sys.stderr,
          flush=True)
    while not stop.is_set() and not served.draining and not task.done():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    served.draining = True
    began = time.perf_counter()
    deadline = began + options.exit_timeout_s
    while (served.inflight or served.pending()) and time.perf_counter() < deadline:
        await asyncio.sleep(0.01)
    left = served.inflight
    server.should_exit = True
    if grpc_server is not None:
        await grpc_server.stop(max(0.0, min(1.0, deadline - time.perf_counter())))
    try:
        await asyncio.wait_for(task, max(0.1, deadline - time.perf_counter()))
    except asyncio.TimeoutError:
        server.force_exit = True
    served.stop(timeout_s=max(0.1, deadline - time.perf_counter()))
    return {"drained_s": time.perf_counter() - began, "unfinished": left, "signals": signals}


def _grpc_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def serve(target: str, runtime: str | None, options: ServeOptions) -> dict[str, Any]:
    """Build, warm and serve in this process until a signal; blocks."""
    served = build_served(target, runtime, options)
    # The scheduler thread and the event loop share the GIL; at the default 5 ms switch interval a batch that
    # finished can wait 5 ms for the loop to let go, which is a large part of a tight latency budget.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        return asyncio.run(serve_async(served, options))
    finally:
        served.stop()
