"""``tvision evaluate`` against the real server on a labelled set built from real photos.

The set's truth is made, not measured: folders of photos the model names firmly (by the
in-process reference, each variant's top class leads the next by about 0.14 or more: coffee
"espresso" at 0.92-0.95, the Summer Palace "palace" at 0.37-0.49, the flower "daisy" at
0.27-0.33), and a folder labelled "missile" that holds coffee photos, whose every image
is therefore a mistake (missile -> espresso). The expected accuracy is the share of
images outside that folder.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.helpers import run_tvision
from tests.labelled import jpeg, labelled_set
from tvision import evaluate
from tvision.exit_codes import EXIT_CHECK_FAILED, EXIT_COULD_NOT_RUN, EXIT_OK
from tvision_export.samples import sample_photo
from tvision_export.spec import DEFAULT_SPEC

pytestmark = pytest.mark.e2e

# folder -> (sample photo, its variants); "missile" is deliberately wrong.
FOLDERS = {
    "espresso": ("coffee", ("orig", "flip", "small")),
    "palace": ("china", ("orig", "small")),
    "daisy": ("flower", ("orig", "flip", "crop")),
}
WRONG = {"missile": ("coffee", ("orig", "flip"))}


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    return labelled_set(tmp_path_factory.mktemp("labelled"), {**FOLDERS, **WRONG})


def _expected_top1(folders, wrong) -> float:
    right = sum(len(variants) for _, variants in folders.values())
    return right / (right + sum(len(variants) for _, variants in wrong.values()))


def test_evaluate_reports_accuracy_mistakes_and_the_reference_and_gates(
    triton_server, labelled, tmp_path
) -> None:
    report, plot, baseline = tmp_path / "eval.json", tmp_path / "eval.png", tmp_path / "base.json"
    done = run_tvision(
        "evaluate", "--images", str(labelled), "--url", triton_server.grpc_url,
        "--json", str(report), "--plot", str(plot), "--save-baseline", str(baseline),
        "--min-top1", "0.75",
    )  # fmt: skip
    assert done.returncode == EXIT_OK, done.stdout + done.stderr
    data = json.loads(report.read_text())
    expected = _expected_top1(FOLDERS, WRONG)  # 8 of 10
    assert data["images"] == 10 and data["top1"] == pytest.approx(expected)
    low, high = data["top1_interval_95"]
    assert low < expected < high and high - low > 0.2  # 10 images: a wide interval
    # The model itself, in-process, makes the same call on these photos.
    assert data["reference_top1"] == pytest.approx(expected)
    assert data["served_reference_agreement"] == 1.0
    assert data["confused_pairs"] == [{"true": "missile", "predicted": "espresso", "count": 2}]
    classes = {row["label"]: row for row in data["per_class"]}
    assert classes["missile"]["recall"] == 0.0 and classes["missile"]["support"] == 2
    assert classes["espresso"]["precision"] == pytest.approx(3 / 5)  # 2 of 5 were "missile"
    assert classes["daisy"]["recall"] == classes["palace"]["recall"] == 1.0
    assert classes["daisy"]["support"] == 3 and classes["palace"]["support"] == 2
    assert "missile -> espresso: 2" in done.stdout and "accuracy gate passed" in done.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A worse set, against that baseline: the gate fails and names what it missed.
    more_wrong = {"missile": ("coffee", ("orig", "flip", "small"))}
    worse = labelled_set(tmp_path / "worse", {**FOLDERS, **more_wrong})
    done = run_tvision(
        "evaluate", "--images", str(worse), "--url", triton_server.grpc_url, "--no-reference",
        "--baseline", str(baseline), "--max-top1-drop-points", "5", "--min-top1", "0.8",
    )  # fmt: skip
    assert done.returncode == EXIT_CHECK_FAILED, done.stdout + done.stderr
    assert "accuracy gate FAILED: top-1 accuracy, top-1 vs baseline" in done.stdout
    drop = (expected - _expected_top1(FOLDERS, more_wrong)) * 100
    assert f"-{drop:.1f} pt" in done.stdout


def test_a_folder_that_names_no_label_is_refused_with_the_nearest(tmp_path) -> None:
    labelled_set(tmp_path, {"espreso": ("coffee", ("orig",))})
    done = run_tvision("evaluate", "--images", str(tmp_path), "--url", "127.0.0.1:1")
    assert done.returncode == EXIT_COULD_NOT_RUN
    assert "folder 'espreso' matches no label of the model; nearest labels: espresso" in (
        done.stderr
    )


def test_folder_names_match_labels_in_any_case_and_with_underscores(tmp_path) -> None:
    labels = DEFAULT_SPEC.load_labels()
    for name in ("Tiger_Cat", "tiger cat", "empty"):
        (tmp_path / name).mkdir()
    (tmp_path / "Tiger_Cat" / "a.jpg").write_bytes(b"x")
    (tmp_path / "tiger cat" / "b.png").write_bytes(b"x")
    with pytest.raises(evaluate.EvaluationError, match="'empty' matches no label"):
        evaluate.collect_labelled(tmp_path, labels)
    (tmp_path / "empty").rmdir()
    (tmp_path / "daisy").mkdir()
    (tmp_path / "daisy" / "notes.txt").write_text("not an image")
    with pytest.raises(evaluate.EvaluationError, match="folder 'daisy' has no images"):
        evaluate.collect_labelled(tmp_path, labels)
    (tmp_path / "daisy" / "notes.txt").unlink()
    (tmp_path / "daisy").rmdir()
    found = evaluate.collect_labelled(tmp_path, labels)
    assert [labels[item.label] for item in found] == ["tiger cat", "tiger cat"]


def test_an_unreadable_image_is_counted_and_named_and_fails_the_default_gate(
    triton_server, tmp_path
) -> None:
    root = labelled_set(tmp_path, {"espresso": ("coffee", ("orig", "flip"))})
    broken = root / "espresso" / "broken.jpg"
    broken.write_bytes(jpeg(Image.open(sample_photo("coffee").path))[:400])  # truncated
    labels = DEFAULT_SPEC.load_labels()
    outcome = evaluate.evaluate(
        triton_server.grpc_url, DEFAULT_SPEC.name, labels, evaluate.collect_labelled(root, labels)
    )
    assert outcome.count == 2 and outcome.top1() == 1.0
    ((image, error),) = outcome.unreadable
    assert image == str(broken) and error
    (check,) = evaluate.judge(outcome)
    assert check.name == "unreadable images" and not check.met
    assert evaluate.judge(outcome, max_unreadable=1)[0].met


def test_the_wilson_interval_against_values_worked_by_hand() -> None:
    # 9 of 11 at z = 1.96: centre (p + z²/2n) / (1 + z²/n), half-width from the formula.
    low, high = evaluate.wilson_interval(9, 11)
    assert (round(low, 3), round(high, 3)) == (0.523, 0.949)
    assert evaluate.wilson_interval(0, 10)[0] == 0.0 and evaluate.wilson_interval(10, 10)[1] == 1.0


def test_the_confusion_matrix_of_many_classes_draws_the_most_frequent_and_sums_the_rest() -> None:
    """30 classes in the set: the 20 most frequent are drawn, the rest summed as "other",
    and no image is lost (the matrix's total is the set's)."""
    from tvision import evaluate_report

    labels = [f"class {index:02d}" for index in range(40)]
    outcome = evaluate.Evaluation(labels=labels)
    for index in range(30):
        for _ in range(index + 1):  # class 29 is the most frequent, class 0 the least
            outcome.truth.append(index)
            outcome.served.append([index if index % 3 else 39, 0, 1, 2, 3])
    names, matrix = evaluate_report.confusion_matrix(outcome)
    assert len(names) == len(matrix) == 21 and names[-1] == "other"
    assert names[:-1] == [f"class {index:02d}" for index in range(10, 30)]
    assert sum(map(sum, matrix)) == outcome.count
    # Classes 0-9 (55 images) are all in "other"; so is every prediction of class 39.
    assert sum(matrix[-1]) == sum(range(1, 11))
    assert matrix[names.index("class 12")][-1] == 13  # 12 % 3 == 0: predicted class 39
