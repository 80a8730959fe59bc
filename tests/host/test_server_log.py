"""What the server writes about itself in its log."""

import pytest

from host.server import loggable_store_url


@pytest.mark.parametrize(
    "store, logged",
    [
        ("redis://:s3cret@10.0.0.5:6379/0?prefix=shop", "redis://***@10.0.0.5:6379/0"),
        (
            "redis+sentinel://ops:s3cret@h1:26379,h2:26379/qrfleet",
            "redis+sentinel://***@h1:26379,h2:26379/qrfleet",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("sqlite:///var/lib/qrfleet/shop@1.db", "sqlite:///var/lib/qrfleet/shop@1.db"),
    ],
)
def test_the_store_is_logged_without_its_password(store, logged):
    assert loggable_store_url(store) == logged
