"""DALI-backend model: encoded images -> normalised float32 tensors, decoded on the GPU.

The exporter writes this file as ``<name>_preprocess/<v>/dali.py`` with the block below
rendered from the model's spec (``tvision_export.dali_model``). The DALI backend
autoserializes ``pipeline`` when it loads the model, on the GPU node: a pipeline that
decodes with nvJPEG (``device="mixed"``) cannot be built without CUDA, so the export
needs no GPU. It imports DALI and nothing else.

``preprocess(device)`` is the whole definition. ``pipeline`` builds it for the GPU;
``tvision fidelity`` and the tests build the same function with ``device="cpu"``, the CPU
twin (``tvision.dali_twin``), and hold it to the model's reference preprocessing.

The geometry is the reference's, not DALI's defaults: the intake computes each image's
upright and resized sizes as the reference rounds them, and where its center crop starts,
from the image's header (``dali_intake.py``); DALI's ``resize_shorter`` rounds differently
and its centered crop lands half a pixel away. The resize is linear with antialiasing,
which is what Pillow's bilinear resize is when it shrinks, done in Pillow's two passes.
The decoder turns images upright by their EXIF orientation, as the reference does.
"""

import nvidia.dali as dali
import nvidia.dali.fn as fn
import nvidia.dali.types as types
from nvidia.dali.plugin.triton import autoserialize

# -- rendered from the model's spec --------------------------------------------------------
ENCODED = "ENCODED"
UPRIGHT_HW = "UPRIGHT_HW"
RESIZED_HW = "RESIZED_HW"
CROP_POSITION = "CROP_POSITION"
CROP_PX = 224
# On 0-255 pixels: (pixel / scale - mean) / std == (pixel - mean * scale) / (std * scale).
MEAN = (127.0, 127.0, 127.0)
STD = (128.0, 128.0, 128.0)
CHANNEL_ORDER = "RGB"
OUTPUT_LAYOUT = "CHW"
MAX_BATCH_SIZE = 64
NUM_THREADS = 4
# -- end of the rendered block -------------------------------------------------------------


def preprocess(device):
    """Decode on ``device`` ("gpu": nvJPEG, or "cpu"), resize, crop and normalise."""
    encoded = fn.external_source(device="cpu", name=ENCODED, dtype=types.UINT8, ndim=1)
    upright_hw = fn.external_source(device="cpu", name=UPRIGHT_HW, dtype=types.FLOAT, ndim=1)
    resized_hw = fn.external_source(device="cpu", name=RESIZED_HW, dtype=types.FLOAT, ndim=1)
    position = fn.external_source(device="cpu", name=CROP_POSITION, dtype=types.FLOAT, ndim=1)
    images = fn.decoders.image(
        encoded,
        device="mixed" if device == "gpu" else "cpu",
        output_type=types.BGR if CHANNEL_ORDER == "BGR" else types.RGB,
        jpeg_fancy_upsampling=True,
    )
    # Pillow's bilinear resize, pass by pass: the width first, then the height, each pass
    # rounded to 8 bits half up, as Pillow's fixed-point passes round. DALI's one-pass
    # resize computes the same filter exactly, which is 0.1 level off Pillow on average.
    images = _rounded(_linear(images, fn.stack(upright_hw[0], resized_hw[1])))
    images = _rounded(_linear(images, resized_hw))
    return fn.crop_mirror_normalize(
        images,
        crop=(CROP_PX, CROP_PX),
        crop_pos_y=position[0],
        crop_pos_x=position[1],
        mean=list(MEAN),
        std=list(STD),
        dtype=types.FLOAT,
        output_layout=OUTPUT_LAYOUT,
    )


def _linear(images, size):
    return fn.resize(
        images, size=size, interp_type=types.INTERP_LINEAR, antialias=True, dtype=types.FLOAT
    )


def _rounded(images):
    return fn.cast(dali.math.floor(images + 0.5), dtype=types.UINT8)


@autoserialize
@dali.pipeline_def(batch_size=MAX_BATCH_SIZE, num_threads=NUM_THREADS, device_id=0)
def pipeline():
    return preprocess("gpu")
