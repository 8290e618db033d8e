"""The plots of a report, drawn with matplotlib when it is installed; without it, reports are tables only.

Each figure is built from records' headline figures (`Record.headline()`), never from scenario names.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from rtpick.results import Results

NO_PLOTS = "plots need matplotlib: pip install 'rtpick[report]' (or pip install matplotlib)"


@dataclass
class Figure:
    title: str
    png: bytes
    caption: str


def have_matplotlib() -> bool:
    """Whether matplotlib imports here (installed and working); imported only when a report is drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def figures(results: Results, ci_text: str) -> list[Figure]:
    """The plots this results file supports: percentiles, throughput vs batch, latency vs throughput, accuracy.

    Returns [] when matplotlib is not installed (the caller says so once, with how to get it).
    """
    if not have_matplotlib():
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[Figure] = []
    rows = [(r.label, r.headline(), r) for r in results.ok()]
    with_pct = [(name, h) for name, h, _ in rows if h.p50 is not None and h.p99 is not None]
    if with_pct:
        fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(with_pct)))
        # one colour and marker per percentile, set explicitly: the legend's marker is each row's marker
        styles = (("p50", "o", "tab:blue"), ("p90", "s", "tab:orange"), ("p99", "^", "tab:red"))
        for key, marker, colour in styles:
            points = [(getattr(h, key), i) for i, (_name, h) in enumerate(with_pct) if getattr(h, key) is not None]
            if points:
                ax.scatter([x for x, _ in points], [y for _, y in points], marker=marker, color=colour, label=key,
                           zorder=3)
        for i, (_name, h) in enumerate(with_pct):
            if h.ci_p99 is not None:
                ax.plot(h.ci_p99, [i, i], color="grey", lw=1, zorder=2)
        ax.plot([], [], color="grey", lw=1, label="p99 95% CI")
        ax.set_yticks(range(len(with_pct)), [n for n, _ in with_pct])
        ax.set_xscale("log")  # runtimes differ by decades: on a linear axis every fast row sits at 0
        _plain_log_ticks(ax.xaxis)
        ax.set_xlabel("latency (ms, host clock, log scale)")
        ax.grid(axis="x", which="both", alpha=0.3)
        _legend_outside(ax)
        out.append(Figure("Latency percentiles per configuration", _png(fig, plt),
                          f"p50/p90/p99 per configuration; grey bar: p99's {ci_text}"))
    if results.sweeps:
        fig, ax = plt.subplots(figsize=(7, 4))
        for config, sweep in results.sweeps.items():
            pts = sweep["points"]
            if pts:
                ax.plot([p["batch"] for p in pts], [p["throughput"] for p in pts], marker="o", label=config)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("throughput (samples/s)")
        _legend_outside(ax)
        out.append(Figure("Throughput against batch size", _png(fig, plt),
                          "offline sweep; closed loop of back-to-back batches"))
    merged: dict[str, list[tuple[float, float]]] = {}
    for name, h, r in rows:
        if h.curve:
            merged.setdefault(name, []).extend(h.curve)
        elif h.throughput is not None and h.p99 is not None:
            merged.setdefault(r.config, []).append((h.throughput, h.p99))
    if merged:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, pts in merged.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        ax.set_xlabel("throughput (samples/s or achieved q/s)")
        ax.set_ylabel("p99 latency (ms, log scale)")
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        _legend_outside(ax)
        out.append(Figure("Latency against throughput", _png(fig, plt),
                          "p99 latency against throughput for each configuration"))
    acc = [(name, h, r) for name, h, r in rows if r.accuracy is not None and h.p50 is not None]
    if acc:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, h, r in acc:
            ax.scatter(h.p50, float(r.accuracy or 0) * 100, label=name)
            if h.ci_p50 is not None:
                ax.plot(h.ci_p50, [float(r.accuracy or 0) * 100] * 2, color="grey", lw=1)
        spread = [v for _, h, _ in acc for v in (h.p50, *(h.ci_p50 or ())) if v is not None]
        if spread and max(spread) > 10 * min(spread) > 0:
            ax.set_xscale("log")  # runtimes differ by decades: a linear axis would crush the fast ones
        ax.set_xlabel("p50 latency (ms, host clock)")
        ax.set_ylabel("top-1 accuracy (%)")
        _legend_outside(ax)
        details = {(str((r.accuracy_detail or {}).get("eval_set")), str((r.accuracy_detail or {}).get("n")))
                   for _, _, r in acc}
        sets = "; ".join(f"{name} ({n} rows)" for name, n in sorted(details))
        out.append(Figure("Accuracy against speed", _png(fig, plt),
                          f"top-1 accuracy of each configuration's own session on {sets}, against its p50 "
                          f"latency; grey bar: p50's {ci_text}"))
    return out


def _plain_log_ticks(axis: Any) -> None:
    """Log-axis ticks at 1, 2 and 5 of each decade, written as plain numbers (0.5, 2, 20), no minor labels:
    matplotlib's default labels every minor tick of a short range in overlapping powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _legend_outside(ax: Any) -> None:
    """The legend to the right of the axes, never over the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")


def _png(fig: Any, plt: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")  # "tight" keeps the outside legend
    plt.close(fig)
    return buffer.getvalue()
