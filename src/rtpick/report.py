"""Reading results back out: the terminal table, Markdown and HTML reports with plots, and `diff`.

Every figure carries its unit and configuration; every plot in a report sits beside the command that
reproduces it (stored in the results file when it was measured). Rows come from each record's headline
figures (`Record.headline()`), so no scenario is special-cased here. Every string read from a results file
is escaped in the HTML page (a results file is data, never markup). Without matplotlib the reports are
tables only, and say how to get the plots.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from rtpick.errors import RtpickError
from rtpick.files import atomic_write_bytes
from rtpick.perf.energy import energy_cell, energy_words
from rtpick.perf.record import Record
from rtpick.perf.scenarios.base import Headline
from rtpick.plots import NO_PLOTS, Figure, figures, have_matplotlib
from rtpick.results import Results
from rtpick.resultsdiff import Change, check_same_model, ci_kind, diff

__all__ = ["Change", "Figure", "check_same_model", "diff", "failures", "html_page", "markdown", "table",
           "write_reports"]


def ci_words(results: Results) -> str:
    """How the intervals in `results` were computed, in a few words for a caption."""
    methods = {ci_kind(record) for record in results.ok()
               if record.measurement is not None and record.measurement.ci()}
    methods = {"sectioning over blocks" if m.startswith("sectioning") else
               "bootstrap within one run" if m == "within-run bootstrap" else m for m in methods}
    return "95% CI, " + (" / ".join(sorted(methods)) if methods else "none recorded")


def _accuracy_text(record: Record) -> str:
    if isinstance(record.accuracy, int | float):
        return f"{record.accuracy:.2%}"
    return "error" if (record.accuracy_detail or {}).get("error") else "-"


def _fmt(value: Any, digits: int = 3) -> str:
    """Three significant figures below 1000 (0.00587, 12.3), whole numbers with separators above."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 or value != value else f"{value:,.0f}"
    return str(value)


def _with_ci(h: Headline, key: str, sep: str = " ") -> str:
    """A headline percentile with its 95% interval when it has one: "0.412 [0.401, 0.423]"."""
    ci = getattr(h, f"ci_{key}")
    return _fmt(getattr(h, key)) + (f"{sep}[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci is not None else "")


def table(results: Results) -> Any:
    """A rich table of every configuration, failures included with their cause."""
    from rich.markup import escape
    from rich.table import Table

    scenario = str(results.scenario.get("scenario", ""))
    t = Table(title=escape(f"rtpick bench: {results.model_name}, {scenario}"),
              caption=f"latency on the host clock, ms; [{ci_words(results)}]; rates per second")
    rows = [(r, r.headline()) for r in results.ok()]
    other = any(h.result for _, h in rows)
    scored = any(r.accuracy_detail for r, _ in rows)
    for col in ("configuration", "p50 ms", "p99 ms", "throughput /s", *(["result"] if other else []),
                *(["top-1"] if scored else []), "build s", "first ms", "peak RSS MB"):
        t.add_column(col)
    for record, h in rows:
        t.add_row(escape(record.label), _with_ci(h, "p50", "\n"), _with_ci(h, "p99", "\n"),
                  _fmt(h.throughput) + energy_cell(_metrics(record)),
                  *([escape(h.result)] if other else []),
                  *([_accuracy_text(record)] if scored else []), _fmt(record.build_time_s),
                  _fmt(record.first_inference_ms), _fmt(record.memory_figure("host_rss_peak_mb")))
    for record in results.failed():
        t.add_row(escape(record.label), f"[red]{escape(record.status)}[/]", "", "", *([""] if other else []),
                  *([""] if scored else []), "", "", "")
    return t


def failures(results: Results) -> list[str]:
    """One line per failed configuration with its cause, printed under the table."""
    return [f"{r.label}: {r.status}: {r.error or ''}" for r in results.failed()]


def _answers(results: Results) -> tuple[bool, bool]:
    """Whether any row has a search answer (`Headline.result`) and frames-on-time (the extra columns)."""
    heads = [r.headline() for r in results.ok()]
    return any(h.result for h in heads), any(h.on_time_fraction is not None for h in heads)


def _on_time(h: Headline) -> str:
    return "-" if h.on_time_fraction is None else f"{h.on_time_fraction:.1%}"


def _method_refs(results: Results) -> tuple[dict[int, int], list[tuple[str, str]]]:
    """Each row's note number, and the notes: how each scenario measured, written once (the per-row parts,
    calls and duration, are in the row's n column)."""
    notes: list[tuple[str, str]] = []
    refs: dict[int, int] = {}
    for index, record in enumerate(results.configurations):
        if not record.ok:
            continue
        text = _method_text(record)
        shape = _generic(text)
        for number, (scenario, seen) in enumerate(notes, 1):
            if scenario == record.scenario and _generic(seen) == shape:
                refs[index] = number
                break
        else:
            notes.append((record.scenario, text))
            refs[index] = len(notes)
    return refs, notes


def _generic(text: str) -> str:
    """A method text with its numbers taken out: two rows measured the same way give the same text."""
    import re

    return re.sub(r"[0-9][0-9,.]*", "#", text)


def _rows_md(results: Results) -> list[str]:
    answers, on_time = _answers(results)
    refs, _ = _method_refs(results)
    head = ["configuration", "status", "p50 ms [95% CI]", "p99 ms [95% CI]", "throughput /s",
            *(["search answer"] if answers else []), *(["frames on time"] if on_time else []), "top-1", "build s",
            "first inference ms", "n (calls)", "how measured"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for index, r in enumerate(results.configurations):
        if not r.ok:
            cells = [_md(r.label), _md(r.status)] + [""] * (len(head) - 3) + [_md(r.error or "")]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        h = r.headline()
        cells = [_md(r.label), "ok", _with_ci(h, "p50"), _with_ci(h, "p99"),
                 _fmt(h.throughput) + energy_cell(_metrics(r), "<br>"),
                 *([_md(h.result or "-")] if answers else []), *([_on_time(h)] if on_time else []),
                 _accuracy_text(r), _fmt(r.build_time_s), _fmt(r.first_inference_ms), _fmt(h.n),
                 f"note {refs[index]}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _metrics(record: Record) -> dict[str, Any] | None:
    return record.measurement.data if record.measurement is not None else None


def _method_md(results: Results) -> list[str]:
    _, notes = _method_refs(results)
    if not notes:
        return []
    out = ["", "How measured (each note once; the rows that cite it differ only in their figures):", ""]
    out += [f"{number}. {_md(scenario)}: {_md(text)}" for number, (scenario, text) in enumerate(notes, 1)]
    return out


def _md(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")


def _method_text(record: Record) -> str:
    """How a row was measured: the scenario's method, the interval's, and the accuracy's."""
    parts = [record.method]
    measurement = record.measurement
    ci = measurement.ci() if measurement is not None else {}
    if ci.get("method"):
        parts.append(f"CI: {ci['method']}")
    load = measurement.load() if measurement is not None else {}
    before, after = load.get("before"), load.get("after")
    if isinstance(before, int | float) and isinstance(after, int | float):
        parts.append(f"machine load (1-min average) {before:.1f} -> {after:.1f} on {load.get('cpus')} CPUs")
    parts.append(energy_words((measurement.data if measurement is not None else {}).get("energy")))
    detail = record.accuracy_detail or {}
    if detail.get("method"):
        parts.append(f"accuracy: {detail['method']} on {detail.get('eval_set')}")
    elif detail.get("error"):
        parts.append(f"accuracy not measured: {detail['error']}")
    return "; ".join(str(p) for p in parts if p)


def _sweep_lines(results: Results) -> list[str]:
    return [f"{config}: throughput stops growing at batch {sweep.get('saturation_batch')}"
            + (f"; sweep stopped: {sweep['stopped']}" if sweep.get("stopped") else "")
            for config, sweep in results.sweeps.items()]


def markdown(results: Results, image_names: list[str] | None = None, figs: list[Figure] | None = None) -> str:
    env = results.environment
    figs = figures(results, ci_words(results)) if figs is None else figs
    lines = [
        f"# rtpick bench: {results.model_name} ({results.scenario.get('scenario')})", "",
        f"Measured {results.created} on {env.get('cpu', '?')} ({env.get('cpu_cores_logical', '?')} logical cores),"
        f" GPU: {_gpu_text(env)}; python {env.get('python', '?')}.", "",
        f"Model sha256 `{results.model_sha256}`.", "",
        "Reproduce every figure below with:", "", "```", results.command, "```", "",
        *_rows_md(results), *_method_md(results), "",
    ]
    lines += [f"- {line}" for line in _sweep_lines(results)]
    if not have_matplotlib():
        lines += ["", f"No plots: {NO_PLOTS}."]
    for i, fig in enumerate(figs):
        lines += ["", f"## {fig.title}", "", fig.caption + ".", ""]
        if image_names:
            lines.append(f"![{fig.title}]({image_names[i]})")
        lines += ["", "Command:", "", "```", results.command, "```"]
    return "\n".join(lines) + "\n"


def _gpu_text(env: dict[str, Any]) -> str:
    gpu = env.get("gpu") if isinstance(env.get("gpu"), dict) else {}
    gpus = gpu.get("gpus") if isinstance(gpu.get("gpus"), list) else []
    if gpus:
        return ", ".join(str(g.get("name") if isinstance(g, dict) else g) for g in gpus) \
            + f" (driver {gpu.get('driver')})"
    return str(gpu.get("reason", "none"))


def html_page(results: Results, figs: list[Figure] | None = None) -> str:
    """A self-contained page: the table, and each figure as an embedded PNG beside its command.

    Everything that came from the results file goes through `html.escape`, figures included.
    """
    def esc(value: Any) -> str:
        return html.escape(str(value), quote=True)

    figs = figures(results, ci_words(results)) if figs is None else figs
    name = esc(results.model_name)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>rtpick bench: {name}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}pre{background:#f4f4f4;padding:6px}</style>",
        "</head><body>",
        f"<h1>rtpick bench: {name} ({esc(results.scenario.get('scenario'))})</h1>",
        f"<p>Measured {esc(results.created)} on {esc(results.environment.get('cpu', '?'))}; "
        f"GPU: {esc(_gpu_text(results.environment))}. Model sha256 <code>{esc(results.model_sha256)}</code>.</p>",
    ]
    answers, on_time = _answers(results)
    refs, notes = _method_refs(results)
    head = ["configuration", "status", "p50 ms [95% CI]", "p99 ms [95% CI]", "throughput /s",
            *(["search answer"] if answers else []), *(["frames on time"] if on_time else []), "top-1",
            "build s", "first inference ms", "n (calls)", "how measured"]
    parts.append("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>")
    for index, r in enumerate(results.configurations):
        if not r.ok:
            parts.append(f"<tr><td>{esc(r.label)}</td><td>{esc(r.status)}</td><td colspan={len(head) - 2}>"
                         f"{esc(r.error or '')}</td></tr>")
            continue
        h = r.headline()
        cells = [r.label, "ok", _with_ci(h, "p50"), _with_ci(h, "p99"), _fmt(h.throughput),
                 *([h.result or "-"] if answers else []), *([_on_time(h)] if on_time else []),
                 _accuracy_text(r), _fmt(r.build_time_s), _fmt(r.first_inference_ms), _fmt(h.n),
                 f"note {refs[index]}"]
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    if notes:
        parts.append("<p>How measured (each note once; the rows that cite it differ only in their figures):</p><ol>")
        parts += [f"<li>{esc(scenario)}: {esc(text)}</li>" for scenario, text in notes]
        parts.append("</ol>")
    parts += [f"<p>{esc(line)}</p>" for line in _sweep_lines(results)]
    if not have_matplotlib():
        parts.append(f"<p>No plots: {esc(NO_PLOTS)}.</p>")
    for fig in figs:
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
    figs = figures(results, ci_words(results))
    try:
        for i, fig in enumerate(figs):
            png = prefix.parent / f"{prefix.name}-fig{i + 1}.png"
            atomic_write_bytes(png, fig.png)
            images.append(png.name)
        atomic_write_bytes(md_path, markdown(results, images, figs).encode())
        atomic_write_bytes(html_path, html_page(results, figs).encode())
    except OSError as exc:
        raise RtpickError(f"cannot write the report next to {str(prefix)!r}: {exc.strerror or exc}") from exc
    return [md_path, html_path, *(prefix.parent / name for name in images)]
