"""``tvision fidelity``: each JPEG decode strategy against the model's reference preprocessing.

For every photo, the reference (``tvision_export.reference``: full decode, resize the short
side, crop) and each strategy's preprocessing (exactly the server's ``ImagePreprocessor``)
run through the same ONNX Runtime session. Reported per strategy: top-1 agreement with the
reference, the largest probability difference over the strategy's top 5 classes (the
measure ``tvision validate`` uses), and the CPU time of decode, resize and crop relative
to the exact decode, by size class, JPEGs only.

The photo set is built from packages (``build_photo_set``): the photos in the
scikit-image and scikit-learn wheels and, when Debian's ``opencv-doc`` is installed, its
example photos, each re-encoded at the sizes real clients send.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tvision.fidelity_strategies import DALI_TWIN, Preprocess, strategy
from tvision.validate import COMPARED_CLASSES
from tvision.validate import DEFAULT_MAX_PROBABILITY_DIFF as MAX_PROBABILITY_DIFF
from tvision.validate import DEFAULT_MIN_TOP1_AGREEMENT as MIN_TOP1_AGREEMENT
from tvision_export.samples import bundled_photos, phone_jpeg
from tvision_export.spec import ModelSpec

OPENCV_DOC_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
# Natural photos among opencv-doc's examples (not charts, text, logos or calibration boards).
OPENCV_PHOTOS = (
    "HappyFish.jpg", "aero1.jpg", "aero3.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg",
    "basketball1.png", "board.jpg", "box_in_scene.png", "building.jpg", "butterfly.jpg",
    "chicky_512.png", "ela_original.jpg", "fruits.jpg", "graf1.png", "home.jpg",
    "leuvenA.jpg", "leuvenB.jpg", "licenseplate_motion.jpg", "messi5.jpg", "orange.jpg",
    "rubberwhale1.png", "smarties.png", "squirrel_cls.jpg", "starry_night.jpg",
)  # fmt: skip

# Re-encodings of each photo: short sides seen on the web and from cameras, the sizes where
# a reduced decode lands exactly on the resize target, and a phone photo stored sideways.
SHORT_SIDES_PX = (512, 600, 1024, 1080)
EXACT_SIZES_PX = ((512, 512), (683, 512), (768, 512), (1365, 1024))
PHONE_SIZE_PX = (4032, 3024)
JPEG_QUALITY = 90


class FidelityError(Exception):
    """ONNX Runtime cannot load the model, or cannot run it on the preprocessed photos."""


def source_photos(include_opencv: bool = True) -> list[Path]:
    """The photos the set is built from, in a fixed order: the wheels' (``bundled_photos``),
    then opencv-doc's.

    Raises:
        FileNotFoundError: a photo is missing from its wheel.
    """
    paths = [photo.path for photo in bundled_photos()]
    if include_opencv and OPENCV_DOC_DATA.is_dir():
        paths += [OPENCV_DOC_DATA / name for name in OPENCV_PHOTOS]
    return [path for path in paths if path.is_file()]


def _jpeg(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def variants(path: Path, sizes: str = "all") -> dict[str, bytes]:
    """One photo re-encoded: the file as found, JPEGs at several sizes, a sideways phone
    photo with EXIF orientation 6, and a PNG. ``sizes="quirks"`` keeps only the sizes
    where a reduced decode is hardest to get right, and the phone photo and the PNG."""
    from PIL import Image

    rgb = Image.open(path).convert("RGB")
    width, height = rgb.size
    stem = path.stem
    out: dict[str, bytes] = {}
    if sizes == "all":
        out[f"{stem}-original{path.suffix.lower()}"] = path.read_bytes()
        for short in SHORT_SIDES_PX:
            scale = short / min(width, height)
            size = (round(width * scale), round(height * scale))
            out[f"{stem}-{size[0]}x{size[1]}.jpg"] = _jpeg(rgb.resize(size, Image.LANCZOS))
    for size in EXACT_SIZES_PX:
        out[f"{stem}-{size[0]}x{size[1]}.jpg"] = _jpeg(rgb.resize(size, Image.LANCZOS))
    phone = rgb.resize((PHONE_SIZE_PX[1], PHONE_SIZE_PX[0]), Image.LANCZOS)  # upright portrait
    out[f"{stem}-phone-{PHONE_SIZE_PX[0]}x{PHONE_SIZE_PX[1]}-exif6.jpg"] = phone_jpeg(
        phone, JPEG_QUALITY
    )
    buffer = io.BytesIO()
    scale = 600 / min(width, height)
    rgb.resize((round(width * scale), round(height * scale)), Image.LANCZOS).save(buffer, "PNG")
    out[f"{stem}-short600.png"] = buffer.getvalue()
    return out


def build_photo_set(
    directory: Path,
    sizes: str = "all",
    include_opencv: bool = True,
    progress: Callable[[str], None] = lambda _message: None,
) -> list[Path]:
    """Write the photo set into ``directory`` (replacing it) and return the files.

    Raises:
        FileNotFoundError: no source photo could be found.
    """
    sources = source_photos(include_opencv)
    if not sources:
        raise FileNotFoundError("no source photos: scikit-image and scikit-learn are missing")
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    written = []
    for number, source in enumerate(sources, start=1):
        progress(f"re-encoding {source.name} ({number}/{len(sources)})")
        for name, data in variants(source, sizes).items():
            path = directory / name
            path.write_bytes(data)
            written.append(path)
    return written


def size_class(width: int, height: int) -> str:
    short = min(width, height)
    if short < 900:
        return "short side < 900"
    if short < 2000:
        return "short side 900-1999"
    return "short side >= 2000"


@dataclass
class StrategyResult:
    strategy: str
    images: int = 0
    top1_agreements: int = 0
    diffs: list[float] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)
    # Photos this path refuses with a clear error (the DALI path: alpha, 16-bit, CMYK).
    refused: list[str] = field(default_factory=list)
    cpu_s_by_class: dict[str, float] = field(default_factory=dict)

    @property
    def top1_agreement(self) -> float:
        return self.top1_agreements / self.images if self.images else 0.0

    def percentile(self, fraction: float) -> float:
        return float(np.percentile(self.diffs, fraction * 100)) if self.diffs else 0.0

    def over(self, bound: float) -> int:
        return sum(diff > bound for diff in self.diffs)

    def meets_bound(self) -> bool:
        return (
            self.top1_agreement >= MIN_TOP1_AGREEMENT
            and max(self.diffs, default=0.0) <= MAX_PROBABILITY_DIFF
        )


@dataclass
class FidelityReport:
    images: int
    jpegs_by_class: dict[str, int]
    results: list[StrategyResult]
    default: str

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "jpegs_by_class": self.jpegs_by_class,
            "default": self.default,
            "bound": {"min_top1_agreement": MIN_TOP1_AGREEMENT, "max_dp": MAX_PROBABILITY_DIFF},
            "strategies": [
                {
                    "strategy": r.strategy,
                    "top1_agreement": r.top1_agreement,
                    "max_dp_median": r.percentile(0.5),
                    "max_dp_p95": r.percentile(0.95),
                    "max_dp_max": max(r.diffs, default=0.0),
                    "over_bound": r.over(MAX_PROBABILITY_DIFF),
                    "cost_vs_exact_by_class": cost_ratios(self, r),
                    "disagreements": r.disagreements,
                    "refused": r.refused,
                }
                for r in self.results
            ],
        }


def cost_ratios(report: FidelityReport, result: StrategyResult) -> dict[str, float]:
    """CPU time by size class relative to the exact decode; empty when it was not run."""
    exact = next((r for r in report.results if r.strategy == "exact"), None)
    if exact is None:
        return {}
    return {
        size: result.cpu_s_by_class[size] / exact.cpu_s_by_class[size]
        for size in exact.cpu_s_by_class
        if exact.cpu_s_by_class[size] > 0
    }


def _onnx_runtime_errors() -> tuple[type[Exception], ...]:
    """Every error ONNX Runtime's binding raises (Fail, NoSuchFile, InvalidProtobuf, ...):
    they derive from Exception directly, not from one base of their own."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    return tuple(
        value
        for value in vars(state).values()
        if isinstance(value, type) and issubclass(value, Exception)
    )


def _classifier(onnx_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Scores for a batch of model inputs, from one ONNX Runtime session on the CPU.

    Raises:
        FidelityError: the file is missing or not a model ONNX Runtime can load, or a run
            fails (an input the model does not take).
    """
    import onnxruntime as ort

    errors = _onnx_runtime_errors()
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    try:
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    except errors as exc:
        raise FidelityError(f"{onnx_path}: ONNX Runtime cannot load it: {exc}") from exc
    input_name = session.get_inputs()[0].name

    def scores(batch: np.ndarray) -> np.ndarray:
        try:
            (output,) = session.run(None, {input_name: batch})
        except errors as exc:
            raise FidelityError(f"{onnx_path}: ONNX Runtime cannot run it: {exc}") from exc
        return np.asarray(output)

    return scores


def measure(
    spec: ModelSpec,
    onnx_path: Path,
    images: Sequence[Path],
    strategies: Sequence[str],
    default: str,
    progress: Callable[[str], None] = lambda _message: None,
) -> FidelityReport:
    """Compare each strategy with the reference on ``images``; see the module docstring.

    Raises:
        FidelityError: ONNX Runtime cannot load or run ``onnx_path``.
        ValueError: an unknown strategy.
        OSError: a photo cannot be read or is not an image.
    """
    classify = _classifier(onnx_path)
    spec_dict = json.loads(spec.preprocess.to_json())
    preprocessors = {name: strategy(name, spec_dict) for name in strategies}
    results = {name: StrategyResult(name) for name in strategies}
    jpegs_by_class: dict[str, int] = {}
    for number, path in enumerate(images, start=1):
        if number % 25 == 0:
            progress(f"{number}/{len(images)} images")
        klass = _compare(spec, path, classify, preprocessors, results)
        if klass is not None:
            jpegs_by_class[klass] = jpegs_by_class.get(klass, 0) + 1
    return FidelityReport(
        images=len(images),
        jpegs_by_class=jpegs_by_class,
        results=list(results.values()),
        default=default,
    )


def _compare(
    spec: ModelSpec,
    path: Path,
    classify: Callable[[np.ndarray], np.ndarray],
    preprocessors: dict[str, Preprocess],
    results: dict[str, StrategyResult],
) -> str | None:
    """One photo through the reference and each strategy; its size class if a JPEG."""
    from PIL import Image

    from tvision_export.reference import reference_preprocess

    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as header:
        is_jpeg, size = header.format == "JPEG", header.size
    klass = size_class(*size)
    reference = classify(reference_preprocess(data, spec.preprocess)[None])
    from tvision_export.triton_models.preprocess import ImageRejected

    for name, preprocess in preprocessors.items():
        result = results[name]
        try:
            pixels, spent = preprocess(data)
        except ImageRejected:
            result.refused.append(path.name)
            continue
        served = classify(pixels)
        result.images += 1
        top = np.argsort(served[0])[::-1][:COMPARED_CLASSES]
        result.diffs.append(float(np.max(np.abs(served[0][top] - reference[0][top]))))
        if int(top[0]) == int(reference[0].argmax()):
            result.top1_agreements += 1
        else:
            result.disagreements.append(path.name)
        if is_jpeg:
            result.cpu_s_by_class[klass] = result.cpu_s_by_class.get(klass, 0.0) + spent
    return klass if is_jpeg else None


def render(report: FidelityReport) -> str:
    classes = sorted(report.jpegs_by_class)
    twin = any(result.strategy == DALI_TWIN for result in report.results)
    header = (
        f"{'strategy':<14}{'top-1 agree':>12}{'max dp median':>15}{'p95':>8}{'max':>8}"
        f"{'> ' + format(MAX_PROBABILITY_DIFF, 'g'):>7}  "
        + "  ".join(f"cost {name}" for name in classes)
    )
    lines = [
        f"{report.images} images; JPEGs by size: "
        + ", ".join(f"{name}: {count}" for name, count in sorted(report.jpegs_by_class.items())),
        "cost = CPU time of decode, resize and crop relative to exact, JPEGs only"
        + (f" ({DALI_TWIN}: the intake's check and the whole pipeline)" if twin else ""),
        header,
    ]
    for result in report.results:
        costs = cost_ratios(report, result)
        default = "  (default)" if result.strategy == report.default else ""
        bound = "meets the bound" if result.meets_bound() else "MISSES the bound"
        lines.append(
            f"{result.strategy:<14}{result.top1_agreement:>12.1%}{result.percentile(0.5):>15.4f}"
            f"{result.percentile(0.95):>8.4f}{max(result.diffs, default=0.0):>8.4f}"
            f"{result.over(MAX_PROBABILITY_DIFF):>7}  "
            + "  ".join(
                f"{costs.get(name, float('nan')):>{len('cost ' + name)}.2f}" for name in classes
            )
            + f"  {bound}{default}"
        )
    lines += [
        f"{result.strategy} refused {len(result.refused)} images it does not accept, with "
        f"an error that says so: {', '.join(result.refused)}"
        for result in report.results
        if result.refused
    ]
    lines.append(
        f"bound: top-1 agreement >= {MIN_TOP1_AGREEMENT:.1%} and max dp over the top "
        f"{COMPARED_CLASSES} <= {MAX_PROBABILITY_DIFF:g} on every image"
    )
    return "\n".join(lines)
