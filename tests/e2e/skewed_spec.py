"""A spec whose preprocessing differs from what the repository serves: a skew to catch."""

from dataclasses import replace

from tvision_export.spec import DEFAULT_SPEC

# The usual ImageNet mean/std instead of EfficientNet-Lite's (x - 127) / 128.
SKEWED = replace(
    DEFAULT_SPEC,
    preprocess=replace(
        DEFAULT_SPEC.preprocess,
        mean=(123.675, 116.28, 103.53),
        std=(58.395, 57.12, 57.375),
    ),
)
