"""ESP images are built as esptool builds them and checked as the ESP-IDF bootloader checks them."""

import functools
import operator

import pytest
from esptool.bin_image import LoadFirmwareImage

from tools import esp_image


@pytest.mark.parametrize(
    "image", [esp_image.app(version=b"v1.27.0", note=b"code" * 300), esp_image.bootloader()]
)
def test_built_images_pass_esptools_own_checks(image):
    loaded = LoadFirmwareImage("esp32", image)
    loaded.verify()  # the checksum
    assert loaded.stored_digest == loaded.calc_digest
    assert esp_image.check(image + b"\xff" * 64, 0x10000).length == len(image)


def test_checksum_is_the_xor_of_every_byte_seeded_with_0xef():
    data = bytes(range(256)) * 3 + b"\x05\x07\x09"
    assert esp_image.checksum(data) == functools.reduce(operator.xor, data, 0xEF)


def test_version_and_date_come_from_the_app_descriptor_and_a_bootloader_has_none():
    app = esp_image.check(esp_image.app(version=b"v1.27.0", date=b"Dec 10 2025"), 0x10000)
    assert (app.version, app.date) == (b"v1.27.0", b"Dec 10 2025")
    assert esp_image.check(esp_image.bootloader(), 0x1000).version == b""


def test_image_longer_than_its_partition_is_refused():
    image = esp_image.app(note=b"x" * 4096)
    with pytest.raises(esp_image.ImageError, match="doesn't fit in partition length 4096"):
        esp_image.check(image[:4096], 0x10000)


def test_erased_flash_is_nothing_flashed():
    with pytest.raises(esp_image.ImageError, match="invalid magic byte"):
        esp_image.check(b"\xff" * 4096, 0x190000)
