"""One self-contained HTML page per run: the verdict first, then what it rests on.

Charts are PNG, drawn with Pillow and embedded as data URIs, so the page is one file that
a release pipeline can archive and anyone can open.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from PIL import Image, ImageDraw, ImageFont

from tvision_loadtest.gate import EXIT_PASSED, RunSummary, Verdict
from tvision_loadtest.server_metrics import ModelLoad

_ENSEMBLE_NOTE = " (ensemble, end to end)"
PASS_COLOUR, FAIL_COLOUR = (27, 124, 58), (180, 30, 30)
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


@dataclass(frozen=True)
class Sample:
    """The run at one moment: the master's current (last seconds') figures."""

    elapsed_s: float
    users: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _nice_max(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


# The plot area's margins in a line chart (left, right, top, bottom), in pixels: the title
# and legend sit in the top margin, the left axis's figures in the left one and a second
# axis's in the right one, so nothing is drawn over the lines.
CHART_MARGINS = (70, 70, 56, 50)


def _ticks(axis_max: float) -> list[float]:
    """Round figures from 0 to at most ``axis_max``, no more than six."""
    step = _nice_max(axis_max / 5)
    count = int(axis_max / step + 1e-9)
    return [step * tick for tick in range(count + 1)]


@dataclass(frozen=True)
class _Frame:
    """Where a line chart's plot sits in its image, and the values at its edges."""

    width: int
    height: int
    x_max: float
    y_max: float
    right_max: float

    def at(self, x: float, y: float, y_top: float | None = None) -> tuple[float, float]:
        left, right, top, bottom = CHART_MARGINS
        plot_w, plot_h = self.width - left - right, self.height - top - bottom
        y_top = self.y_max if y_top is None else y_top
        return left + plot_w * min(x, self.x_max) / self.x_max, top + plot_h * (1 - y / y_top)


def line_chart(
    title: str,
    x_label: str,
    y_label: str,
    series: dict[str, Sequence[tuple[float, float]]],
    markers: bool = False,
    size: tuple[int, int] = (760, 320),
    *,
    x_max: float | None = None,
    right_label: str = "",
    right_series: dict[str, Sequence[tuple[float, float]]] | None = None,
) -> bytes:
    """A PNG line chart of one or more (x, y) series sharing axes from 0.

    ``x_max`` ends the x axis there (a run's length) instead of at the next round figure;
    ``right_series`` are drawn against an axis of their own on the right (``right_label``),
    so a count of users is not read against req/s. The legend is above the plot.
    """
    right_series = right_series or {}
    points = [point for values in series.values() for point in values]
    right_points = [point for values in right_series.values() for point in values]
    if x_max is None or x_max <= 0:
        x_max = _nice_max(max((x for x, _ in points + right_points), default=1.0))
    frame = _Frame(
        size[0], size[1], x_max,
        y_max=_nice_max(max((y for _, y in points), default=1.0)),
        right_max=_nice_max(max((y for _, y in right_points), default=1.0)),
    )  # fmt: skip
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    _draw_axes(draw, frame, title, x_label, y_label, right_label if right_series else "")
    drawn = [(name, values, frame.y_max, "") for name, values in series.items()]
    drawn += [
        (name, values, frame.right_max, " (right axis)") for name, values in right_series.items()
    ]
    for index, (_name, values, y_top, _note) in enumerate(drawn):
        colour = PALETTE[index % len(PALETTE)]
        pixels = [frame.at(x, y, y_top) for x, y in values]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        if markers or len(pixels) == 1:
            for px, py in pixels:
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
    _draw_legend(draw, frame, [name + note for name, _values, _top, note in drawn])
    return _png(image)


def _draw_axes(
    draw: ImageDraw.ImageDraw, frame: _Frame, title: str, x_label: str, y_label: str,
    right_label: str,
) -> None:  # fmt: skip
    """Title, grid, tick labels (the right axis's only with a ``right_label``), frame and
    axis labels."""
    left, right, top, bottom = CHART_MARGINS
    width, height = frame.width, frame.height
    title_font, font = _font(16), _font(12)
    draw.text((left, 10), title, fill="black", font=title_font)
    for tick in range(6):
        y = frame.y_max * tick / 5
        _, py = frame.at(0, y)
        draw.line([(left, py), (width - right, py)], fill=(225, 225, 225))
        draw.text((left - 8, py), f"{y:g}", fill="black", font=font, anchor="rm")
        if right_label:
            value = frame.right_max * tick / 5
            draw.text((width - right + 8, py), f"{value:g}", fill="black", font=font,
                      anchor="lm")  # fmt: skip
    for x in _ticks(frame.x_max):
        px, _ = frame.at(x, 0)
        draw.text((px, height - bottom + 8), f"{x:g}", fill="black", font=font, anchor="mt")
    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    plot_w = width - left - right
    draw.text((left + plot_w / 2, height - 16), x_label, fill="black", font=font, anchor="mm")
    draw.text((8, top - 16), y_label, fill="black", font=font)
    if right_label:
        draw.text((width - 8, top - 16), right_label, fill="black", font=font, anchor="ra")


def _draw_legend(draw: ImageDraw.ImageDraw, frame: _Frame, labels: list[str]) -> None:
    """The legend, right-aligned in the top margin: one entry after another, leftwards."""
    font = _font(12)
    legend_x = float(frame.width - CHART_MARGINS[1])
    for index in reversed(range(len(labels))):
        colour = PALETTE[index % len(PALETTE)]
        draw.text((legend_x, 14), labels[index], fill=colour, font=font, anchor="ra")
        legend_x = draw.textbbox((legend_x, 14), labels[index], font=font, anchor="ra")[0] - 16


def bar_chart(title: str, unit: str, bars: dict[str, dict[str, float]]) -> bytes:
    """Horizontal stacked bars: one per category, segments per component (e.g. queue,
    compute), in ``unit``."""
    row_h, left, right, top = 28, 220, 90, 40
    width = 760
    height = top + row_h * max(len(bars), 1) + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = _font(12)
    draw.text((10, 10), title, fill="black", font=_font(16))
    total_max = _nice_max(max((sum(parts.values()) for parts in bars.values()), default=1.0))
    scale = (width - left - right) / total_max
    components: list[str] = []
    for parts in bars.values():
        components += [name for name in parts if name not in components]
    for row, (label, parts) in enumerate(bars.items()):
        y = top + row * row_h
        draw.text((left - 8, y + row_h / 2), label, fill="black", font=font, anchor="rm")
        x = float(left)
        for name, value in parts.items():
            colour = PALETTE[components.index(name) % len(PALETTE)]
            draw.rectangle([x, y + 4, x + value * scale, y + row_h - 4], fill=colour)
            x += value * scale
        total = sum(parts.values())
        draw.text((x + 6, y + row_h / 2), f"{total:.1f} {unit}", fill="black", font=font,
                  anchor="lm")  # fmt: skip
    for index, name in enumerate(components):
        colour = PALETTE[index % len(PALETTE)]
        x = left + 110 * index
        draw.rectangle([x, height - 24, x + 10, height - 14], fill=colour)
        draw.text((x + 16, height - 25), name, fill=colour, font=font)
    return _png(image)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def throughput_by_users(samples: Sequence[Sample]) -> list[tuple[float, float]]:
    """Mean throughput at each user count the run held (for a ramp), skipping the first
    sample at each level, which mixes in the previous one."""
    levels: dict[int, list[float]] = {}
    previous = None
    for sample in samples:
        if sample.users == previous and sample.users > 0:
            levels.setdefault(sample.users, []).append(sample.rps)
        previous = sample.users
    return [(float(users), sum(v) / len(v)) for users, v in sorted(levels.items())]


def render_html(
    verdict: Verdict,
    run: RunSummary,
    samples: Sequence[Sample],
    server: Sequence[ModelLoad] | None,
    *,
    host: str,
    command: str,
    ensemble: str = "",
    server_note: str = "",
    more: Sequence[str] = (),
) -> str:
    """The whole page: the verdict, the run, its course over time, the server's side, and
    ``more`` (rendered sections: the prediction quality's)."""
    sections = [
        *_verdict_section(verdict),
        *_run_section(run, host, command),
        *_over_time_section(samples),
        *_server_section(server, ensemble, server_note),
        *more,
    ]
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>tvision load test: {verdict.word}</title><style>{_CSS}</style></head><body>"
        f"<h1>tvision load test</h1><p class=when>{created}</p>"
        + "".join(sections)
        + "</body></html>"
    )


def _verdict_section(verdict: Verdict) -> list[str]:
    """The coloured headline, then each objective (or why none was judged)."""
    passed = verdict.exit_code == EXIT_PASSED
    colour = "#%02x%02x%02x" % (PASS_COLOUR if passed else FAIL_COLOUR)
    headline = f"Release gate {verdict.word}"
    if verdict.checks:
        rows = "".join(
            f"<tr class={'met' if c.met else 'missed'}><td>{html.escape(c.name)}</td>"
            f"<td>{html.escape(c.threshold)}</td><td>{html.escape(c.measured)}</td>"
            f"<td>{'met' if c.met else 'MISSED'}</td></tr>"
            for c in verdict.checks
        )
        table = (
            "<table><tr><th>objective</th><th>threshold</th><th>measured</th><th></th></tr>"
            f"{rows}</table>"
        )
    else:
        table = f"<p>{html.escape(verdict.reason)}</p>"
    return [
        f'<div class=verdict style="background:{colour}">{headline} '
        f"(exit {verdict.exit_code})</div>",
        table,
    ]


def _run_section(run: RunSummary, host: str, command: str) -> list[str]:
    """What was run, against what, and its totals."""
    return [
        "<h2>Run</h2>",
        _facts(
            {
                "target": host,
                "command": command,
                "requests": f"{run.requests} ({run.failures} failed)",
                "duration": f"{run.duration_s:.1f} s",
                "throughput": f"{run.throughput_rps:.1f} req/s",
                "latency p50 / p95 / p99": f"{run.p50_ms:.0f} / {run.p95_ms:.0f} / "
                f"{run.p99_ms:.0f} ms",
                "server config": run.server_config[:16] or "(not read)",
                "images": f"{len(run.images)}: "
                + ", ".join(f"{name} ({info})" for name, info in sorted(run.images.items())),
            }
        ),
    ]


def _over_time_section(samples: Sequence[Sample]) -> list[str]:
    """Throughput and latency charts over the run; throughput against users for a ramp."""
    if not samples:
        return []
    # The x axis ends with the run (its last sample, at a whole second), not at the next
    # round figure: a 60 s run is not drawn on an axis to 100 s.
    run_s = float(math.ceil(max(s.elapsed_s for s in samples)))
    throughput = line_chart(
        "Throughput",
        "seconds",
        "req/s",
        {"throughput": [(s.elapsed_s, s.rps) for s in samples]},
        x_max=run_s,
        right_label="users",
        right_series={"users": [(s.elapsed_s, float(s.users)) for s in samples]},
    )
    latency = line_chart(
        "Latency percentiles (last seconds)",
        "seconds",
        "ms",
        {
            "p50": [(s.elapsed_s, s.p50_ms) for s in samples],
            "p95": [(s.elapsed_s, s.p95_ms) for s in samples],
            "p99": [(s.elapsed_s, s.p99_ms) for s in samples],
        },
        x_max=run_s,
    )
    section = ["<h2>Over time</h2>", image(throughput), image(latency)]
    by_users = throughput_by_users(samples)
    if len(by_users) > 1:
        section.append(
            image(
                line_chart(
                    "Throughput against users",
                    "users",
                    "req/s",
                    {"throughput": by_users},
                    markers=True,
                )
            )
        )
    return section


def _server_section(
    server: Sequence[ModelLoad] | None, ensemble: str, server_note: str
) -> list[str]:
    """Each composing model's queue and compute time per request, from Triton's metrics,
    or the note saying why there are none."""
    section = ["<h2>Server side (Triton metrics, during the run)</h2>"]
    composing = [m for m in server or () if m.model != ensemble]
    if not (server and composing):
        section.append(f"<p>{html.escape(server_note or 'No metrics URL was given.')}</p>")
        return section
    chart = bar_chart(
        "Time per request in each composing model",
        "ms",
        {
            m.model: {"queue": m.queue_ms_per_request, "compute": m.compute_ms_per_request}
            for m in composing
        },
    )
    rows = "".join(
        f"<tr><td>{html.escape(m.model)}{_ENSEMBLE_NOTE if m.model == ensemble else ''}"
        f"</td><td>{m.requests}</td><td>{m.failures}</td>"
        f"<td>{m.queue_ms_per_request:.2f}</td><td>{m.compute_ms_per_request:.2f}</td>"
        f"<td>{m.mean_batch_size:.2f}</td></tr>"
        for m in server
    )
    section.append(image(chart))
    section.append(
        "<table><tr><th>model</th><th>requests</th><th>failed</th><th>queue ms/req</th>"
        f"<th>compute ms/req</th><th>mean batch executed</th></tr>{rows}</table>"
    )
    return section


def _facts(facts: dict[str, str]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts.items()
    )
    return f"<table class=facts>{rows}</table>"


def image(png: bytes) -> str:
    return f'<p><img alt="" src="data:image/png;base64,{base64.b64encode(png).decode()}"></p>'


_CSS = """
body{font-family:sans-serif;margin:24px;max-width:900px;color:#222}
.verdict{color:#fff;font-size:32px;font-weight:bold;padding:18px 24px;border-radius:6px}
table{border-collapse:collapse;margin:12px 0}
td,th{border:1px solid #ccc;padding:4px 10px;text-align:left;font-size:14px}
tr.missed td{background:#fde8e8;font-weight:bold} tr.met td:last-child{color:#1b7c3a}
.facts th{background:#f4f4f4;width:180px} .when{color:#666}
"""
