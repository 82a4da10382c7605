"""Inference requests built, and responses and model information parsed (KServe v2
protobufs, Triton's classification extension)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from tritonclient.grpc import service_pb2

from tvision_client._errors import ClientError, InvalidImageError
from tvision_client._types import Classification, ModelInfo, Prediction

# The one name of the server's contract the SDK knows: the ensemble config parameter that
# bounds one encoded image, so that an image the server would refuse is refused before it
# is sent. Tensor names and every other limit are read from the server at run time.
# ``tests/export/test_sdk_agreement.py`` ties it to the exporter's ``PARAM_MAX_IMAGE_BYTES``.
MAX_IMAGE_BYTES_PARAMETER = "max_image_bytes"


def serialize_bytes_tensor(elements: Sequence[bytes]) -> bytes:
    """KServe v2 BYTES layout: each element as a 4-byte little-endian length, then its bytes."""
    parts = []
    for element in elements:
        parts.append(struct.pack("<I", len(element)))
        parts.append(element)
    return b"".join(parts)


def deserialize_bytes_tensor(raw: bytes) -> list[bytes]:
    elements = []
    offset = 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def check_image_size(data: bytes, where: str, max_bytes: int) -> None:
    """Reject an image the server or channel would refuse, before it is sent; ``where``
    names it (``image_name``).

    Raises:
        InvalidImageError: the image is larger than ``max_bytes``.
    """
    if len(data) > max_bytes:
        raise InvalidImageError(
            f"{where} is {len(data)} bytes, over the limit of {max_bytes} bytes"
        )


@dataclass(frozen=True)
class TensorNames:
    input_name: str
    output_name: str


def build_infer_request(
    model: str, names: TensorNames, images: Sequence[bytes], top_k: int
) -> service_pb2.ModelInferRequest:
    """One request with ``len(images)`` images as a [N, 1] BYTES tensor, asking for top-k.

    Raises:
        ValueError: ``top_k`` is not positive.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name = names.input_name
    tensor.datatype = "BYTES"
    tensor.shape.extend([len(images), 1])
    request.raw_input_contents.append(serialize_bytes_tensor(images))
    output = request.outputs.add()
    output.name = names.output_name
    # Triton's classification extension: the server returns "score:index:label" strings.
    output.parameters["classification"].int64_param = top_k
    return request


def parse_classifications(
    response: service_pb2.ModelInferResponse, count: int, model: str
) -> list[Classification]:
    """Split the classification strings of a response into one result per image.

    Raises:
        ClientError: the response does not hold classification output.
    """
    if not response.raw_output_contents:
        raise ClientError(f"model {model!r} returned no classification output")
    elements = deserialize_bytes_tensor(response.raw_output_contents[0])
    if count == 0 or len(elements) % count:
        raise ClientError(f"model {model!r} returned {len(elements)} results for {count} images")
    per_image = len(elements) // count
    results = []
    for image in range(count):
        predictions = [
            parse_prediction(element)
            for element in elements[image * per_image : (image + 1) * per_image]
        ]
        predictions.sort(key=lambda prediction: prediction.score, reverse=True)
        results.append(Classification(predictions=predictions, model=model))
    return results


def parse_prediction(element: bytes) -> Prediction:
    """Parse ``b"score:index:label"``; the label itself may contain colons."""
    text = element.decode("utf-8")
    score, index, *label = text.split(":", 2)
    return Prediction(label=label[0] if label else "", index=int(index), score=float(score))


def parse_model_info(
    metadata: service_pb2.ModelMetadataResponse, config: service_pb2.ModelConfigResponse
) -> ModelInfo:
    """Build ``ModelInfo`` from the server's metadata and config replies.

    Raises:
        ClientError: the model does not have exactly one input and one output.
    """
    if len(metadata.inputs) != 1 or len(metadata.outputs) != 1:
        raise ClientError(
            f"model {metadata.name!r} has {len(metadata.inputs)} inputs and "
            f"{len(metadata.outputs)} outputs; an image classifier has one of each"
        )
    output = metadata.outputs[0]
    model_config = config.config
    limits = {key: value.string_value for key, value in model_config.parameters.items()}
    return ModelInfo(
        name=metadata.name,
        versions=list(metadata.versions),
        input_name=metadata.inputs[0].name,
        input_datatype=metadata.inputs[0].datatype,
        output_name=output.name,
        num_classes=int(output.shape[-1]),
        max_batch_size=int(model_config.max_batch_size),
        limits=limits,
    )


def image_byte_limit(info: ModelInfo, max_message_bytes: int) -> int:
    """The smaller of the server's image limit and what the channel can carry."""
    server_limit = info.limits.get(MAX_IMAGE_BYTES_PARAMETER)
    # Leave room for the rest of the request message.
    channel_limit = max_message_bytes - 64 * 1024
    return min(int(server_limit), channel_limit) if server_limit else channel_limit
