"""What ``tvision evaluate`` prints and draws: the summary, the per-class table, the most
confused pairs, the gate's verdict, and the confusion matrix as a PNG."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tvision.evaluate import Check, Evaluation

# Classes drawn one by one in the confusion matrix; the others are summed as "other".
PLOTTED_CLASSES = 20
# Rows of the per-class table printed (the JSON has every class).
PRINTED_CLASSES = 30


def summary(outcome: Evaluation) -> list[str]:
    low, high = outcome.top1_interval()
    lines = [
        f"images            {outcome.count} classified"
        + (f", {len(outcome.unreadable)} unreadable" if outcome.unreadable else ""),
        f"top-1 accuracy    {outcome.top1():.1%}  (95% interval {low:.1%} - {high:.1%})",
        f"top-5 accuracy    {outcome.top5():.1%}",
    ]
    reference, agreement = outcome.reference_top1(), outcome.agreement()
    if reference is not None and agreement is not None:
        lines.append(
            f"in-process top-1  {reference:.1%}  (the model's reference preprocessing and "
            f"PyTorch; served and in-process top-1 agree on {agreement:.1%})"
        )
    return lines


def class_table(outcome: Evaluation) -> list[str]:
    scores = sorted(outcome.per_class(), key=lambda score: (-score.support, score.label))
    width = max([len("class"), *(len(score.label) for score in scores)]) + 2
    lines = [f"{'class':<{width}}{'precision':>10}{'recall':>8}{'support':>9}"]
    for score in scores[:PRINTED_CLASSES]:
        lines.append(
            f"{score.label:<{width}}{score.precision:>10.1%}{score.recall:>8.1%}{score.support:>9}"
        )
    if len(scores) > PRINTED_CLASSES:
        lines.append(f"... and {len(scores) - PRINTED_CLASSES} more classes (in --json)")
    return lines


def confusion_lines(outcome: Evaluation) -> list[str]:
    pairs = outcome.confused_pairs()
    if not pairs:
        return ["most confused: none (every image's top-1 is its folder's label)"]
    return ["most confused (true -> predicted, images):"] + [
        f"  {true} -> {predicted}: {count}" for true, predicted, count in pairs
    ]


def unreadable_lines(outcome: Evaluation) -> list[str]:
    return [f"unreadable: {image}: {error}" for image, error in outcome.unreadable]


def verdict_lines(checks: list[Check]) -> list[str]:
    """As the load test's gate prints its verdict: a headline, then one line per check."""
    missed = [check.name for check in checks if not check.met]
    headline = "accuracy gate " + ("FAILED: " + ", ".join(missed) if missed else "passed")
    width = max(len(check.name) for check in checks)
    rows = [
        f"  {check.name:<{width}}  {check.threshold:<16} {check.measured:<32} "
        f"{'met' if check.met else 'MISSED'}"
        for check in checks
    ]
    return [headline, *rows]


def render(outcome: Evaluation, checks: list[Check]) -> str:
    sections = [
        summary(outcome),
        class_table(outcome),
        confusion_lines(outcome),
        unreadable_lines(outcome),
        verdict_lines(checks),
    ]
    return "\n\n".join("\n".join(section) for section in sections if section)


def plotted_classes(outcome: Evaluation) -> list[int]:
    """The classes the matrix draws one by one: the most frequent true labels."""
    frequent = Counter(outcome.truth).most_common(PLOTTED_CLASSES)
    return sorted((index for index, _ in frequent), key=lambda index: outcome.labels[index])


def confusion_matrix(outcome: Evaluation) -> tuple[list[str], list[list[int]]]:
    """Counts of (true, predicted top-1), over the plotted classes plus "other"."""
    classes = plotted_classes(outcome)
    position = {index: row for row, index in enumerate(classes)}
    other = len(classes)
    names = [outcome.labels[index] for index in classes] + ["other"]
    matrix = [[0] * (other + 1) for _ in range(other + 1)]
    for served, true in zip(outcome.served, outcome.truth, strict=True):
        matrix[position.get(true, other)][position.get(served[0], other)] += 1
    if not any(matrix[other]) and not any(row[other] for row in matrix):
        return names[:other], [row[:other] for row in matrix[:other]]  # no "other" needed
    return names, matrix


def plot(outcome: Evaluation, path: Path) -> None:
    """The confusion matrix as a PNG, rows the true labels and columns the predicted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, matrix = confusion_matrix(outcome)
    side = max(4.0, 0.45 * len(names) + 2.5)
    figure, axes = plt.subplots(figsize=(side + 1, side))
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.set_xlabel("predicted (served top-1)")
    axes.set_ylabel("true (folder)")
    darkest = max(max(counts) for counts in matrix)
    for row, counts in enumerate(matrix):
        for column, count in enumerate(counts):
            if count:
                colour = "white" if count > darkest / 2 else "black"
                axes.text(column, row, str(count), ha="center", va="center", fontsize=7,
                          color=colour)  # fmt: skip
    axes.set_title(f"{outcome.count} images, top-1 {outcome.top1():.1%}")
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
