"""A KServe ``InferenceService`` that serves an exported Triton model repository.

Written as data with PyYAML (``rtpick[serve]``), never as a text template. Replicas come from what rtpick
measured: one replica sustains the deploy file's measured throughput (one Triton instance, as measured), so
``--target-rps`` R needs ceil(R / capacity) replicas at least; the maximum doubles the target for bursts, and
the autoscaler aims each pod at 70% of its measured capacity so that it scales out before a pod saturates.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rtpick.errors import RtpickError

if TYPE_CHECKING:
    from rtpick.deploy import DeployConfig

SCALE_TARGET_FRACTION = 0.7
BURST_FACTOR = 2.0
DEFAULT_MEMORY_MI = 2048
MEMORY_HEADROOM = 1.5
PLACEHOLDER_URI = "s3://BUCKET/PATH/TO/REPOSITORY"
REQUIRED_FIELDS = (
    ("apiVersion",), ("kind",), ("metadata", "name"),
    ("spec", "predictor", "minReplicas"), ("spec", "predictor", "maxReplicas"),
    ("spec", "predictor", "model", "modelFormat", "name"), ("spec", "predictor", "model", "protocolVersion"),
    ("spec", "predictor", "model", "storageUri"), ("spec", "predictor", "model", "resources", "limits"),
)


@dataclass(frozen=True)
class Manifest:
    document: dict[str, Any]
    notes: tuple[str, ...]

    def to_yaml(self) -> str:
        return manifest_yaml(self)


def dns_name(text: str) -> str:
    """A Kubernetes object name (RFC 1123 label: lowercase letters, digits and '-', at most 63)."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].strip("-")
    return cleaned or "model"


def replicas(capacity: float | None, target_rps: float | None) -> tuple[int, int, list[str]]:
    """(min, max, notes) from the per-replica capacity (samples/s) and the target rate."""
    if target_rps is None:
        return 1, 1, ["minReplicas = maxReplicas = 1: no --target-rps given"]
    if target_rps <= 0 or not math.isfinite(target_rps):
        raise RtpickError(f"--target-rps must be a positive number, not {target_rps:g}")
    if capacity is None or capacity <= 0:
        raise RtpickError("the deploy file records no measured throughput, so replicas cannot be derived from "
                          "--target-rps; save it again with rtpick recommend ... --save, or drop --target-rps")
    low = max(1, math.ceil(target_rps / capacity))
    high = max(low, math.ceil(BURST_FACTOR * target_rps / capacity))
    return low, high, [f"minReplicas {low} = ceil({target_rps:g} req/s / {capacity:.4g} samples/s measured per "
                       f"replica); maxReplicas {high} = ceil({BURST_FACTOR:g} x target / capacity), for bursts"]


def inference_service(deploy: DeployConfig, spec: Any, storage_uri: str, target_rps: float | None = None,
                      name: str | None = None) -> Manifest:
    """The manifest as data, with notes on every figure that was derived or defaulted."""
    from rtpick.export.triton import facts_for, max_batch_size, serving_policy, triton_name

    if not re.match(r"^[a-z][a-z0-9+.-]*://\S+$", storage_uri):
        raise RtpickError(f"--storage-uri {storage_uri!r} is not a URI; give e.g. s3://bucket/path/to/repo "
                          "(the folder that holds the model's folder)")
    facts = facts_for(deploy)
    policy = serving_policy(deploy, max_batch_size(deploy, spec))
    measured = deploy.measured
    capacity = measured.get("throughput")
    capacity = float(capacity) if isinstance(capacity, int | float) and capacity > 0 else None
    low, high, notes = replicas(capacity, target_rps)
    mem = measured.get("host_mem_mb")
    if isinstance(mem, int | float) and mem > 0:
        memory_mi = math.ceil(float(mem) * MEMORY_HEADROOM)
        notes.append(f"memory {memory_mi}Mi = {MEMORY_HEADROOM:g} x the {float(mem):.4g} MB host memory measured")
    else:
        memory_mi = DEFAULT_MEMORY_MI
        notes.append(f"memory {memory_mi}Mi: host memory not measured (default)")
    threads = int(deploy.options.get("threads") or 0)
    cpu = str(max(1, threads) * policy.instances)
    limits: dict[str, str] = {"cpu": cpu, "memory": f"{memory_mi}Mi"}
    requests = dict(limits)
    if facts.gpu:
        limits["nvidia.com/gpu"] = "1"
        requests["nvidia.com/gpu"] = "1"
    predictor: dict[str, Any] = {"minReplicas": low, "maxReplicas": high}
    if capacity is not None and target_rps is not None:
        predictor["scaleMetric"] = "rps"
        predictor["scaleTarget"] = max(1, math.floor(SCALE_TARGET_FRACTION * capacity))
        notes.append(f"scaleTarget {predictor['scaleTarget']} req/s per pod = {SCALE_TARGET_FRACTION:.0%} of the "
                     "measured capacity")
    predictor["model"] = {
        "modelFormat": {"name": "triton"},
        "protocolVersion": "v2",
        "storageUri": storage_uri,
        "resources": {"requests": requests, "limits": limits},
    }
    model_name = name or triton_name(deploy.model_name or spec.name)
    annotations = {
        "rtpick/config": deploy.config,
        "rtpick/model-sha256": deploy.model_sha256,
        "rtpick/triton-model": model_name,
    }
    if capacity is not None:
        method = str(measured.get("method") or "how: not recorded")
        annotations["rtpick/capacity"] = f"{capacity:.4g} samples/s per replica ({method})"
    if policy.budget_ms:
        annotations["rtpick/budget"] = f"p99 <= {policy.budget_ms:g} ms"
    document = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": dns_name(model_name), "annotations": annotations},
        "spec": {"predictor": predictor},
    }
    return Manifest(document, tuple(notes))


def manifest_yaml(manifest: Manifest) -> str:
    import yaml

    header = "".join(f"# {line}\n" for line in (
        "Generated by rtpick export kserve: serves the Triton model repository at storageUri.",
        *manifest.notes))
    return header + yaml.safe_dump(manifest.document, sort_keys=False)


def missing_fields(document: Any) -> list[str]:
    """The required fields a parsed manifest lacks (dotted paths); empty when complete."""
    missing = []
    for path in REQUIRED_FIELDS:
        node = document
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if node in (None, ""):
            missing.append(".".join(path))
    return missing
