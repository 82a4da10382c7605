"""The report's charts, read back pixel by pixel (issue 20, point 12): the time axis ends
with the run, users have an axis of their own, and the legend is off the plot."""

from __future__ import annotations

import base64
import io
import re

from PIL import Image

from tvision_loadtest import gate, report
from tvision_loadtest.report import CHART_MARGINS, PALETTE, Sample

THROUGHPUT, USERS = PALETTE[0], PALETTE[1]


def _charts(samples: list[Sample]) -> list[Image.Image]:
    run = gate.RunSummary(
        requests=100, failures=0, throughput_rps=80.0, p50_ms=20.0, p95_ms=30.0, p99_ms=40.0,
        duration_s=60.0,
    )  # fmt: skip
    page = report.render_html(
        gate.judge(run, gate.Objectives()), run, samples, None, host="h", command="c"
    )
    return [
        Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")
        for data in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    ]


def _pixels(image: Image.Image, colour: tuple[int, int, int]) -> list[tuple[int, int]]:
    return [
        (x, y)
        for y in range(image.height)
        for x in range(image.width)
        if image.getpixel((x, y)) == colour
    ]


def _plot_box(image: Image.Image) -> tuple[int, int, int, int]:
    left, right, top, bottom = CHART_MARGINS
    return left, top, image.width - right, image.height - bottom


# A 60 s run of 2 users at 80 req/s, sampled every second.
SAMPLES = [Sample(i + 0.5, 2, 80.0, 20.0, 30.0, 40.0) for i in range(60)]


def test_the_time_axis_ends_with_the_run() -> None:
    """A 60 s run's lines reach the plot's right edge: the axis is not drawn to 100 s."""
    throughput, latency = _charts(SAMPLES)[:2]
    for chart in (throughput, latency):
        _left, _top, plot_right, _bottom = _plot_box(chart)
        drawn = [x for x, _y in _pixels(chart, THROUGHPUT)]
        # The last sample (59.5 s) on an axis to 60 s: within 1% of the plot's width.
        assert max(drawn) >= plot_right - 0.01 * chart.width, (max(drawn), plot_right)


def test_users_are_drawn_against_an_axis_of_their_own() -> None:
    """Two users at 80 req/s: on a shared req/s axis the users' line would lie at 2/100 of
    the height, along the bottom; on its own axis it is at the top, as high as 80 req/s."""
    throughput = _charts(SAMPLES)[0]
    left, top, right, bottom = _plot_box(throughput)
    users = [y for x, y in _pixels(throughput, USERS) if left < x < right and top <= y <= bottom]
    assert users, "no users line in the plot"
    assert min(users) <= top + 0.25 * (bottom - top), (min(users), top, bottom)
    # Its axis is labelled on the right.
    assert any(x > right for x, _y in _pixels(throughput, (0, 0, 0)))


def test_the_legend_is_off_the_plot() -> None:
    """The plot area is the same whatever the legend says: no legend text lies on it, even
    where the lines run along the top right, where the legend used to be drawn."""
    points = [(float(x), 80.0) for x in range(61)]

    def plot(names: tuple[str, str]) -> Image.Image:
        png = report.line_chart(
            "t", "seconds", "req/s", {names[0]: points}, x_max=60.0, right_label="users",
            right_series={names[1]: [(x, 2.0) for x, _ in points]},
        )  # fmt: skip
        image = Image.open(io.BytesIO(png)).convert("RGB")
        return image.crop(_plot_box(image))

    short, long = plot(("a", "b")), plot(("a much longer legend entry", "and another one"))
    assert short.tobytes() == long.tobytes()
