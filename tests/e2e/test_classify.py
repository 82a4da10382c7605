"""End to end: real photos, real exported model, real tritonserver, real SDK over gRPC."""

from __future__ import annotations

import io
import json
import struct
import urllib.request

import numpy as np
import pytest
from PIL import Image

from tests.helpers import run_tvision
from tvision.server import TritonServer
from tvision_client import (
    Classification,
    Client,
    ClientError,
    InvalidInputError,
    ModelNotFoundError,
)
from tvision_export.samples import sample_photo, sample_photos

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(triton_server: TritonServer):
    with Client(triton_server.grpc_url, timeout_s=60) as sdk_client:
        sdk_client.wait_until_ready(timeout_s=60)
        yield sdk_client


def test_coffee_is_espresso(client: Client) -> None:
    result = client.classify(sample_photo("coffee").path, top_k=5)
    assert result.top.label == "espresso"
    assert len(result.predictions) == 5
    scores = [prediction.score for prediction in result.predictions]
    assert scores == sorted(scores, reverse=True)
    assert 0.5 < result.top.score <= 1.0


def test_flower_has_daisy_in_top5(client: Client) -> None:
    result = client.classify(sample_photo("flower").path.read_bytes(), top_k=5)
    assert "daisy" in [prediction.label for prediction in result.predictions]


def test_served_top1_matches_in_process_torch_on_every_sample(client, torch_reference) -> None:
    for photo in sample_photos():
        data = photo.path.read_bytes()
        served = client.classify(data, top_k=1).top
        reference = torch_reference.top_k(data, k=1)[0]
        assert served.index == reference.index, photo.name
        assert served.label == torch_reference.labels[reference.index]
        assert served.score == pytest.approx(reference.score, abs=0.02), photo.name


def test_batch_keeps_input_order(client: Client) -> None:
    photos = sample_photos()
    # Interleave so that a reordering would show up as a label mismatch.
    inputs = [photos[i % len(photos)].path for i in (0, 5, 1, 4, 2, 3, 0, 5)]
    batch = client.classify_batch(inputs, top_k=1)
    singles = [client.classify(path, top_k=1) for path in inputs]
    assert [r.top.index for r in batch] == [r.top.index for r in singles]
    assert len({r.top.index for r in batch}) >= 4


def test_accepts_pil_image_and_numpy_array(client: Client) -> None:
    image = Image.open(sample_photo("coffee").path).convert("RGB")
    assert client.classify(image).top.label == "espresso"
    assert client.classify(np.asarray(image)).top.label == "espresso"


@pytest.mark.parametrize(
    ("payload", "expected_words"),
    [
        (b"", "empty"),
        (b"definitely not an image", "not a recognised image"),
        ("truncated", "truncated"),
        ("bomb", "pixels, above the limit"),
    ],
)
def test_bad_bytes_get_a_clear_error_and_server_keeps_serving(client, payload, expected_words):
    if payload == "truncated":
        payload = sample_photo("flower").path.read_bytes()[:3000]
    elif payload == "bomb":
        from tests.export.test_preprocess import _png_claiming

        payload = _png_claiming(60_000, 60_000)  # 3.6 gigapixels claimed in 70 bytes
    with pytest.raises(InvalidInputError) as raised:
        client.classify(payload)
    assert expected_words in str(raised.value)
    assert client.classify(sample_photo("coffee").path).top.label == "espresso"


def test_an_error_about_a_file_names_the_file(client: Client, tmp_path) -> None:
    notes = tmp_path / "notes.jpg"
    notes.write_bytes(b"definitely not an image")
    with pytest.raises(InvalidInputError) as raised:
        client.classify(notes)
    assert f"image file {notes}: not a recognised image" in str(raised.value)
    assert "image 0" not in str(raised.value)
    with pytest.raises(InvalidInputError, match="image 0: not a recognised image"):
        client.classify(notes.read_bytes())  # bytes have no name but their position


def test_bad_image_in_a_batch_fails_only_itself(client: Client) -> None:
    good = sample_photo("coffee").path.read_bytes()
    results = client.classify_batch([good, b"garbage", good, b""], return_exceptions=True)
    assert isinstance(results[0], Classification) and results[0].top.label == "espresso"
    assert isinstance(results[1], InvalidInputError)
    assert isinstance(results[2], Classification) and results[2].top.label == "espresso"
    assert isinstance(results[3], InvalidInputError)


def test_unknown_model_is_a_typed_error(client: Client) -> None:
    with pytest.raises(ModelNotFoundError, match="no_such_model"):
        client.classify(sample_photo("coffee").path, model="no_such_model")


def test_errors_subclass_client_error_and_chain_the_grpc_cause(client: Client) -> None:
    with pytest.raises(ClientError) as raised:
        client.classify(b"xx")
    assert raised.value.__cause__ is not None
    assert type(raised.value.__cause__).__module__.startswith("grpc")


def test_plain_tritonclient_works_against_the_ensemble(triton_server: TritonServer) -> None:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(triton_server.grpc_url) as raw:
        image = np.array([[sample_photo("coffee").path.read_bytes()]], dtype=np.object_)
        inputs = [grpcclient.InferInput("IMAGE", [1, 1], "BYTES")]
        inputs[0].set_data_from_numpy(image)
        outputs = [grpcclient.InferRequestedOutput("PROBABILITIES", class_count=3)]
        result = raw.infer("efficientnet_lite0", inputs, outputs=outputs)
        top = result.as_numpy("PROBABILITIES")[0][0].decode()
    score, index, label = top.split(":", 2)
    assert (int(index), label) == (967, "espresso")
    assert float(score) > 0.5


def test_kserve_http_rest_works_against_the_ensemble(triton_server: TritonServer) -> None:
    """The KServe v2 REST protocol as curl sends it, with the binary-data extension.

    The JSON header is followed by the raw BYTES tensor (4-byte little-endian length, then
    the JPEG), and ``Inference-Header-Content-Length`` says where the JSON ends.
    """
    image = sample_photo("coffee").path.read_bytes()
    tensor = struct.pack("<I", len(image)) + image
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "IMAGE",
                    "shape": [1, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(tensor)},
                }
            ],
            "outputs": [{"name": "PROBABILITIES", "parameters": {"classification": 2}}],
        }
    ).encode()
    request = urllib.request.Request(
        f"{triton_server.http_url}/v2/models/efficientnet_lite0/infer",
        data=header + tensor,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )
    with urllib.request.urlopen(request, timeout=60) as reply:
        answer = json.loads(reply.read())
    top = answer["outputs"][0]["data"][0]
    assert top.split(":", 2)[1:] == ["967", "espresso"]


def test_cli_classify_json_on_unseen_photos(triton_server: TritonServer, tmp_path) -> None:
    # Photos the other tests never send: scikit-image's own retina and Hubble images are not
    # ImageNet classes, so use re-encoded, resized versions of the chelsea cat and coffee.
    cat = tmp_path / "cat.webp"
    Image.open(sample_photo("chelsea").path).resize((900, 600)).save(cat, format="WEBP")
    cup = tmp_path / "cup.jpg"
    Image.open(sample_photo("coffee").path).convert("L").save(cup, format="JPEG", quality=80)
    completed = run_tvision(
        "classify",
        "--json",
        "--top-k",
        "3",
        "--url",
        triton_server.grpc_url,
        str(cat),
        str(cup),
        timeout_s=120,
    )
    assert completed.returncode == 0, completed.stderr
    records = json.loads(completed.stdout)
    assert [record["image"] for record in records] == [str(cat), str(cup)]
    cat_labels = {p["label"] for p in records[0]["predictions"]}
    assert cat_labels & {"tabby cat", "tiger cat", "Egyptian Mau", "a cat having a striped coat"}
    assert records[1]["predictions"][0]["label"] in {"espresso", "tea cup", "coffee mug"}
    assert set(records[0]["predictions"][0]) == {"label", "index", "score"}


def test_bmp_through_the_server(client: Client) -> None:
    buffer = io.BytesIO()
    Image.open(sample_photo("coffee").path).convert("RGB").save(buffer, format="BMP")
    assert buffer.getvalue()[:2] == b"BM"
    assert client.classify(buffer.getvalue()).top.label == "espresso"


def test_dynamic_batcher_executes_batches_larger_than_one(client, triton_server) -> None:
    from tvision.bench.server_side import difference, executed_batch_sizes
    from tvision_export.repository import ModelNames
    from tvision_export.spec import DEFAULT_SPEC

    names = ModelNames.for_model(DEFAULT_SPEC.name)
    before = {
        model: executed_batch_sizes(triton_server.grpc_url, model, triton_server.admin_grpc_headers)
        for model in (names.preprocess, names.classifier)
    }
    photo = sample_photo("coffee").path.read_bytes()
    results = client.classify_batch([photo] * 48)  # 16 requests in flight at a time
    assert {result.top.label for result in results} == {"espresso"}
    for model, counts in before.items():
        executed = difference(
            executed_batch_sizes(triton_server.grpc_url, model, triton_server.admin_grpc_headers),
            counts,
        )
        assert sum(size * count for size, count in executed.items()) == 48, (model, executed)
        assert max(executed) > 1, f"{model} ran only single requests: {executed}"
