"""Reading results back out: the terminal table, Markdown and HTML reports with plots, and `diff`.

Every figure carries its unit and configuration; every plot in a report sits beside the command that
reproduces it (stored in the results file when it was measured). matplotlib is imported only to draw.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtpick.errors import RtpickError
from rtpick.files import atomic_write_bytes
from rtpick.perf.energy import energy_cell, energy_words
from rtpick.perf.stats import intervals_overlap
from rtpick.results import Results


def label(record: dict[str, Any]) -> str:
    return f"{record['config']} b{record['batch']}"


def headline(record: dict[str, Any]) -> dict[str, Any]:
    """The figures one row of a table shows, whatever the scenario: latencies in ms, rates per second."""
    m = record.get("metrics") or {}
    scenario = m.get("scenario", record.get("scenario"))
    row: dict[str, Any] = {"scenario": scenario}
    if scenario in ("single-stream", "offline"):
        lat = m["latency_ms"]
        row.update(p50=lat["p50"], p90=lat["p90"], p99=lat["p99"], mean=lat["mean"], max=lat["max"],
                   ci_p50=lat["ci"]["p50"], ci_p99=lat["ci"]["p99"], throughput=m["throughput"], n=m["n"])
    elif scenario == "server":
        lat = m["latency_ms"]
        row.update(p50=lat["p50"], p99=lat["p99"], ci_p50=lat["ci"]["p50"], ci_p99=lat["ci"]["p99"],
                   throughput=m["achieved_qps"], n=m["queries"])
    elif scenario == "server-find-max":
        best = m.get("best")
        row.update(max_qps=m.get("max_qps"), throughput=best["achieved_qps"] if best else None,
                   p99=best["latency_ms"]["p99"] if best else None)
    elif scenario == "multistream":
        total = m["total"]
        row.update(p50=total["p50_ms"], p99=total["p99_ms"], on_time=total["on_time_fraction"],
                   late=total["late"], dropped=total["dropped"], n=total["frames"])
    elif scenario == "multistream-find-max":
        row.update(max_streams=m.get("max_streams"))
    return row


def ci_words(results: Results) -> str:
    """How the intervals in `results` were computed, in a few words for a caption."""
    methods = set()
    for record in results.ok():
        ci = ((record.get("metrics") or {}).get("latency_ms") or {}).get("ci") or {}
        if ci.get("replicates", 1) > 1:
            methods.add(f"independent replications over {ci['replicates']} processes")
        elif ci:
            methods.add("sectioning over blocks" if ci.get("blocks", 1) > 1 else "bootstrap within one run")
    return "95% CI, " + (" / ".join(sorted(methods)) if methods else "none recorded")


def _accuracy_text(record: dict[str, Any]) -> str:
    if record.get("accuracy") is not None:
        return f"{record['accuracy']:.2%}"
    detail = record.get("accuracy_detail") or {}
    return "error" if detail.get("error") else "-"


def _fmt(value: Any, digits: int = 3) -> str:
    """Three significant figures below 1000 (0.00587, 12.3), whole numbers with separators above."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _with_ci(h: dict[str, Any], key: str, sep: str = " ") -> str:
    """A headline percentile with its 95% interval when it has one: "0.412 [0.401, 0.423]"."""
    ci = h.get(f"ci_{key}")
    return _fmt(h.get(key)) + (f"{sep}[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci is not None else "")


def table(results: Results) -> Any:
    """A rich table of every configuration, failures included with their cause."""
    from rich.table import Table

    scenario = results.scenario.get("scenario", "")
    title = f"rtpick bench: {results.model['spec']['name']}, {scenario}"
    t = Table(title=title, caption=f"latency on the host clock, ms; [{ci_words(results)}]; rates per second")
    rows = [(r, headline(r)) for r in results.configurations if r.get("status") == "ok"]
    other = any(_other(h) for _, h in rows)
    scored = any(r.get("accuracy_detail") for r, _ in rows)
    for col in ("configuration", "p50 ms", "p99 ms", "throughput /s", *(["result"] if other else []),
                *(["top-1"] if scored else []), "build s", "first ms", "peak RSS MB"):
        t.add_column(col)
    for record, h in rows:
        t.add_row(label(record), _with_ci(h, "p50", "\n"), _with_ci(h, "p99", "\n"),
                  _fmt(h.get("throughput")) + energy_cell(record),
                  *([_other(h)] if other else []),
                  *([_accuracy_text(record)] if scored else []), _fmt(record.get("build_time_s")),
                  _fmt(record.get("first_inference_ms")), _fmt(record.get("memory", {}).get("host_rss_peak_mb")))
    for record in results.failed():
        t.add_row(label(record), f"[red]{record['status']}[/]", "", "", *([""] if other else []),
                  *([""] if scored else []), "", "", "")
    return t


def failures(results: Results) -> list[str]:
    """One line per failed configuration with its cause, printed under the table."""
    return [f"{label(r)}: {r['status']}: {r.get('error', '')}" for r in results.failed()]


def _other(h: dict[str, Any]) -> str:
    if h.get("max_qps") is not None or "max_qps" in h:
        return f"max {_fmt(h['max_qps'])} q/s under the p99 bound"
    if "on_time" in h:
        return f"{h['on_time']:.1%} on time, {h['late']} late, {h['dropped']} dropped"
    if "max_streams" in h:
        return f"max {h['max_streams']} cameras"
    return ""


# ------------------------------------------------------------------------------------------------ figures


@dataclass
class Figure:
    title: str
    png: bytes
    caption: str


def figures(results: Results) -> list[Figure]:
    """The plots this results file supports: percentiles, throughput vs batch, latency vs throughput, accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[Figure] = []
    rows = [(label(r), headline(r), r) for r in results.ok()]
    with_pct = [(name, h) for name, h, _ in rows if h.get("p50") is not None and h.get("p99") is not None]
    if with_pct:
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(with_pct)))
        for i, (_name, h) in enumerate(with_pct):
            for key, marker in (("p50", "o"), ("p90", "s"), ("p99", "^")):
                if h.get(key) is not None:
                    ax.scatter(h[key], i, marker=marker, label=key if i == 0 else None)
            if "ci_p99" in h:
                ax.plot(h["ci_p99"], [i, i], color="grey", lw=1)
        ax.set_yticks(range(len(with_pct)), [n for n, _ in with_pct])
        ax.set_xlabel("latency (ms, host clock)")
        ax.legend(loc="best")
        out.append(Figure("Latency percentiles per configuration", _png(fig, plt),
                          f"p50/p90/p99 per configuration; grey bar: p99's {ci_words(results)}"))
    if results.sweeps:
        fig, ax = plt.subplots(figsize=(7, 4))
        for config, sweep in results.sweeps.items():
            pts = sweep["points"]
            if pts:
                ax.plot([p["batch"] for p in pts], [p["throughput"] for p in pts], marker="o", label=config)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("throughput (samples/s)")
        ax.legend(loc="best")
        out.append(Figure("Throughput against batch size", _png(fig, plt),
                          "offline sweep; closed loop of back-to-back batches"))
    curve = []
    for name, h, r in rows:
        m = r["metrics"]
        if m.get("scenario") == "server-find-max":
            curve.append((name, [(t["achieved_qps"], t["latency_ms"]["p99"]) for t in m["trials"]]))
        elif h.get("throughput") is not None and h.get("p99") is not None:
            curve.append((r["config"], [(h["throughput"], h["p99"])]))
    if curve:
        fig, ax = plt.subplots(figsize=(7, 4))
        merged: dict[str, list[tuple[float, float]]] = {}
        for name, pts in curve:
            merged.setdefault(name, []).extend(pts)
        for name, pts in merged.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xlabel("throughput (samples/s or achieved q/s)")
        ax.set_ylabel("p99 latency (ms)")
        ax.legend(loc="best")
        out.append(Figure("Latency against throughput", _png(fig, plt),
                          "p99 latency against throughput for each configuration"))
    acc = [(name, h, r) for name, h, r in rows if r.get("accuracy") is not None and h.get("p50") is not None]
    if acc:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, h, r in acc:
            ax.scatter(h["p50"], r["accuracy"] * 100, label=name)
            if "ci_p50" in h:
                ax.plot(h["ci_p50"], [r["accuracy"] * 100] * 2, color="grey", lw=1)
        spread = [v for _, h, _ in acc for v in (h["p50"], *h.get("ci_p50", ()))]
        if max(spread) > 10 * min(spread) > 0:
            ax.set_xscale("log")  # runtimes differ by decades: a linear axis would crush the fast ones
        ax.set_xlabel("p50 latency (ms, host clock)")
        ax.set_ylabel("top-1 accuracy (%)")
        ax.legend(loc="best")
        details = {(r["accuracy_detail"].get("eval_set"), r["accuracy_detail"].get("n")) for _, _, r in acc}
        sets = "; ".join(f"{name} ({n} rows)" for name, n in sorted(details, key=str))
        out.append(Figure("Accuracy against speed", _png(fig, plt),
                          f"top-1 accuracy of each configuration's own session on {sets}, against its p50 "
                          f"latency; grey bar: p50's {ci_words(results)}"))
    return out


def _png(fig: Any, plt: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _rows_md(results: Results) -> list[str]:
    lines = ["| configuration | status | p50 ms [95% CI] | p99 ms [95% CI] | throughput /s | top-1 | build s | "
             "first inference ms | how measured |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results.configurations:
        if r.get("status") != "ok":
            lines.append(f"| {label(r)} | {r['status']} | | | | | | | {r.get('error', '')} |")
            continue
        h = headline(r)
        lines.append(
            f"| {label(r)} | ok | {_with_ci(h, 'p50')} | {_with_ci(h, 'p99')} | "
            f"{_fmt(h.get('throughput'))}{energy_cell(r, '<br>')} | {_accuracy_text(r)} | "
            f"{_fmt(r.get('build_time_s'))} | "
            f"{_fmt(r.get('first_inference_ms'))} | {_method_text(r)} |"
        )
    return lines


def _method_text(record: dict[str, Any]) -> str:
    """How a row was measured: the scenario's method, the interval's, and the accuracy's."""
    m = record.get("metrics") or {}
    parts = [m.get("method", "")]
    ci = (m.get("latency_ms") or {}).get("ci") or {}
    if ci.get("method"):
        parts.append(f"CI: {ci['method']}")
    load = m.get("load_avg") or {}
    if load.get("before") is not None and load.get("after") is not None:
        parts.append(f"machine load (1-min average) {load['before']:.1f} -> {load['after']:.1f} "
                     f"on {load.get('cpus')} CPUs")
    parts.append(energy_words(m.get("energy")))
    detail = record.get("accuracy_detail") or {}
    if detail.get("method"):
        parts.append(f"accuracy: {detail['method']} on {detail.get('eval_set')}")
    elif detail.get("error"):
        parts.append(f"accuracy not measured: {detail['error']}")
    return "; ".join(p for p in parts if p).replace("|", "/")


def markdown(results: Results, image_names: list[str] | None = None) -> str:
    env = results.environment
    lines = [
        f"# rtpick bench: {results.model['spec']['name']} ({results.scenario.get('scenario')})", "",
        f"Measured {results.created} on {env.get('cpu', '?')} ({env.get('cpu_cores_logical', '?')} logical cores),"
        f" GPU: {_gpu_text(env)}; python {env.get('python', '?')}.", "",
        f"Model sha256 `{results.model['sha256']}`.", "",
        "Reproduce every figure below with:", "", "```", results.command, "```", "",
        *_rows_md(results), "",
    ]
    for config, sweep in results.sweeps.items():
        lines.append(f"- {config}: throughput stops growing at batch {sweep['saturation_batch']}"
                     + (f"; sweep stopped: {sweep['stopped']}" if sweep.get("stopped") else ""))
    for i, fig in enumerate(figures(results)):
        lines += ["", f"## {fig.title}", "", fig.caption + ".", ""]
        if image_names:
            lines.append(f"![{fig.title}]({image_names[i]})")
        lines += ["", "Command:", "", "```", results.command, "```"]
    return "\n".join(lines) + "\n"


def _gpu_text(env: dict[str, Any]) -> str:
    gpu = env.get("gpu") or {}
    if gpu.get("gpus"):
        return ", ".join(g["name"] for g in gpu["gpus"]) + f" (driver {gpu.get('driver')})"
    return gpu.get("reason", "none")


def html_page(results: Results) -> str:
    """A self-contained page: the table, and each figure as an embedded PNG beside its command."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>rtpick bench: {esc(results.model['spec']['name'])}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}pre{background:#f4f4f4;padding:6px}</style>",
        "</head><body>",
        f"<h1>rtpick bench: {esc(results.model['spec']['name'])} ({esc(str(results.scenario.get('scenario')))})</h1>",
        f"<p>Measured {esc(results.created)} on {esc(str(results.environment.get('cpu', '?')))}; "
        f"GPU: {esc(_gpu_text(results.environment))}. Model sha256 <code>{esc(results.model['sha256'])}</code>.</p>",
        "<table><tr><th>configuration</th><th>status</th><th>p50 ms [95% CI]</th><th>p99 ms [95% CI]</th>"
        "<th>throughput /s</th><th>top-1</th><th>how measured</th></tr>",
    ]
    for r in results.configurations:
        if r.get("status") != "ok":
            parts.append(f"<tr><td>{esc(label(r))}</td><td>{esc(r['status'])}</td><td colspan=5>"
                         f"{esc(r.get('error', ''))}</td></tr>")
            continue
        h = headline(r)
        parts.append(
            f"<tr><td>{esc(label(r))}</td><td>ok</td><td>{_with_ci(h, 'p50')}</td>"
            f"<td>{_with_ci(h, 'p99')}</td><td>{_fmt(h.get('throughput'))}</td>"
            f"<td>{esc(_accuracy_text(r))}</td><td>{esc(_method_text(r))}</td></tr>"
        )
    parts.append("</table>")
    for fig in figures(results):
        data = base64.b64encode(fig.png).decode()
        parts.append(f"<h2>{esc(fig.title)}</h2><p>{esc(fig.caption)}.</p>"
                     f"<img alt='{esc(fig.title)}' src='data:image/png;base64,{data}'>"
                     f"<p>Reproduce with:</p><pre>{esc(results.command)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(results_path: str | Path, out_prefix: str | Path | None = None) -> list[Path]:
    """``out.json`` -> ``out.md`` and ``out.html`` (or `out_prefix`.md/.html); returns the paths written."""
    results = Results.read(results_path)
    prefix = Path(out_prefix) if out_prefix else Path(results_path).with_suffix("")
    md_path, html_path = prefix.with_suffix(".md"), prefix.with_suffix(".html")
    images: list[str] = []
    figs = figures(results)
    try:
        for i, fig in enumerate(figs):
            png = prefix.parent / f"{prefix.name}-fig{i + 1}.png"
            atomic_write_bytes(png, fig.png)
            images.append(png.name)
        atomic_write_bytes(md_path, markdown(results, images).encode())
        atomic_write_bytes(html_path, html_page(results).encode())
    except OSError as exc:
        raise RtpickError(f"cannot write the report next to {str(prefix)!r}: {exc.strerror or exc}") from exc
    return [md_path, html_path, *(prefix.parent / name for name in images)]


# ------------------------------------------------------------------------------------------------ diff


@dataclass
class Change:
    key: str
    metric: str
    old: float
    new: float
    significant: bool
    note: str
    old_ci: list[float] | None = None
    new_ci: list[float] | None = None

    @property
    def ratio(self) -> float:
        return self.new / self.old if self.old else float("inf")


def _key(record: dict[str, Any]) -> str:
    return f"{label(record)} {record.get('scenario', '')}"


def diff(old: Results, new: Results) -> list[Change]:
    """Per configuration present in both: p50 and p99 changes, flagged when their 95% CIs do not overlap.

    The intervals are the ones stored in each file (sectioning over blocks, see `rtpick.perf.stats`), the same
    a reader sees in each file's table: "changed" means the two brackets a user would compare do not touch.
    """
    olds = {_key(r): r for r in old.ok()}
    changes: list[Change] = []
    for record in new.ok():
        before = olds.get(_key(record))
        if before is None:
            continue
        h_old, h_new = headline(before), headline(record)
        for metric in ("p50", "p99"):
            if h_old.get(metric) is None or h_new.get(metric) is None:
                continue
            ci_old, ci_new = h_old.get(f"ci_{metric}"), h_new.get(f"ci_{metric}")
            if ci_old and ci_new:
                significant = not intervals_overlap(ci_old, ci_new)
                note = "95% CIs do not overlap" if significant else "within the measured noise (CIs overlap)"
                if _ci_kind(before) != _ci_kind(record):
                    note += f" (intervals of different kinds: {_ci_kind(before)} vs {_ci_kind(record)})"
                if significant and (load := _load_note(before, record)):
                    note += f"; {load}"
            else:
                significant = False
                note = "no confidence interval recorded: not judged"
            changes.append(Change(_key(record), metric, h_old[metric], h_new[metric], significant, note,
                                  list(ci_old) if ci_old else None, list(ci_new) if ci_new else None))
    return changes


def _ci_kind(record: dict[str, Any]) -> str:
    ci = ((record.get("metrics") or {}).get("latency_ms") or {}).get("ci") or {}
    if ci.get("replicates", 1) > 1:
        return f"independent replications over {ci['replicates']} processes"
    return f"sectioning over {ci['blocks']} blocks" if ci.get("blocks", 1) > 1 else "within-run bootstrap"


def _load_note(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Words when the machine's load differed, or was high, in either measurement (it, not the code, may be why)."""
    def level(record: dict[str, Any]) -> float | None:
        load = (record.get("metrics") or {}).get("load_avg") or {}
        values = [v for v in (load.get("before"), load.get("after"), load.get("max")) if v is not None]
        return max(values) if values else None

    a, b = level(old), level(new)
    if a is None or b is None:
        return ""
    cpus = ((new.get("metrics") or {}).get("load_avg") or {}).get("cpus") or 1
    if abs(a - b) >= max(0.5, 0.25 * cpus):
        return f"the machine's load differed (1-min load average {a:.1f} vs {b:.1f} on {cpus} CPUs)"
    if max(a, b) >= cpus:
        return (f"the machine was busy with other work (1-min load average {a:.1f} and {b:.1f} on {cpus} CPUs): "
                "its changes, not the code, may explain this")
    return ""
