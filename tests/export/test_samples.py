"""The photos from the wheels, listed once, and the phone re-encoding the benchmark's
traffic and the fidelity set share."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps

from tvision import fidelity
from tvision_export.samples import bundled_photos, phone_jpeg, sample_photo, sample_photos


def test_the_fidelity_set_starts_from_every_bundled_photo_and_the_samples_are_among_them():
    samples = [photo.name for photo in sample_photos()]
    assert samples == ["coffee", "chelsea", "astronaut", "rocket", "china", "flower"]
    bundled = [photo.path for photo in bundled_photos()]
    assert {photo.path for photo in sample_photos()} < set(bundled)
    assert fidelity.source_photos(include_opencv=False) == bundled


def test_a_phone_photo_is_stored_sideways_and_shown_upright():
    upright = Image.open(sample_photo("coffee").path).convert("RGB").resize((300, 400))
    data = phone_jpeg(upright, quality=90)
    stored = Image.open(io.BytesIO(data))
    assert stored.format == "JPEG"
    assert stored.size == (400, 300)
    assert stored.getexif()[0x0112] == 6
    shown = np.asarray(ImageOps.exif_transpose(stored), dtype=np.int16)
    assert shown.shape == (400, 300, 3)
    assert np.abs(shown - np.asarray(upright, dtype=np.int16)).mean() < 4
