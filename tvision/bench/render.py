"""Plain-text tables and the PNG plot of a ``BenchReport``."""

from __future__ import annotations

from pathlib import Path

from tvision.bench.report import RATIO_TARGETS, BenchReport


def render_table(report: BenchReport) -> str:
    """Every run, the served run's CPU by part, the images, then the ratios and targets."""
    header = (
        f"{'path':<12}{'conc':>5}{'img/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'wire B/img':>12}"
        f"{'srv CPU ms/img':>16}{'cli CPU ms/img':>16}  batch sizes executed"
    )
    lines = [
        f"tvision bench on {report.cpu_count} CPU cores, {report.duration_s:g} s per run",
        header,
        "-" * len(header),
    ]
    for r in report.results:
        batches = " ".join(f"{size}x{count}" for size, count in r.batch_sizes.items())
        lines.append(
            f"{r.path:<12}{r.concurrency:>5}{r.images_per_s:>9.1f}{r.p50_ms:>9.1f}"
            f"{r.p99_ms:>9.1f}{r.wire_bytes_per_image:>12.0f}"
            f"{r.server_cpu_s_per_image * 1000:>16.2f}"
            f"{r.client_cpu_s_per_image * 1000:>16.2f}  {batches} {r.note}".rstrip()
        )
    if any(r.path == "served" for r in report.results):
        served = report.best("served")
        breakdown = ", ".join(
            f"{part} {ms:.1f}" for part, ms in served.server_cpu_ms_per_image_by_part.items()
        )
        lines += [
            "",
            f"server CPU ms/image, served at concurrency {served.concurrency}: {breakdown}",
        ]
    sizes = ", ".join(f"{name} {size / 1000:.0f} kB" for name, size in report.image_bytes.items())
    lines.append(f"images sent in turn: {sizes}")
    changed = {key: report.serving_options[key] for key in report.changed_options}
    if changed:
        lines.append(f"serving options changed for this run: {changed}")
    ratios = report.ratios()
    if ratios is not None:
        lines.append("")
        for target in RATIO_TARGETS:
            value = ratios[target.key]
            verdict = "meets" if value >= target.target else "MISSES"
            lines.append(
                f"{target.label:<52}{value:>7.3f}x  target >= {target.target:g}x  {verdict}"
            )
    return "\n".join(lines)


def plot(report: BenchReport, path: Path) -> None:
    """Throughput and p99 latency against concurrency, one line per path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for path_name in ("served", "client-side", "naive"):
        runs = sorted(
            (r for r in report.results if r.path == path_name), key=lambda r: r.concurrency
        )
        xs = [r.concurrency for r in runs]
        throughput.plot(xs, [r.images_per_s for r in runs], marker="o", label=path_name)
        latency.plot(xs, [r.p99_ms for r in runs], marker="o", label=path_name)
    if any(r.path == "limit" for r in report.results):
        throughput.axhline(
            report.best("limit").images_per_s,
            color="grey",
            linestyle="--",
            label="in-process limit",
        )
    concurrencies = sorted({r.concurrency for r in report.results if r.path != "limit"})
    for axis, title, unit in (
        (throughput, "Throughput", "images/s"),
        (latency, "p99 latency", "ms"),
    ):
        axis.set_xscale("log", base=2)
        axis.set_xticks(concurrencies, [str(c) for c in concurrencies])
        axis.set_xlabel("concurrent requests")
        axis.set_ylabel(unit)
        axis.set_title(f"{title} ({report.cpu_count} CPU cores)")
        axis.grid(True, alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
