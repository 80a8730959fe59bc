"""The unit's config: a cut-off or corrupt file is refused with a reason, never a crash."""

import json

import pytest

from firmware import config

GOOD = {"secret": "9f" * 16, "servers": ["ws://127.0.0.1:8000/ws/device"], "name": "counter 1"}


def test_device_id_is_derived_from_the_mac():
    assert config.device_id(bytes.fromhex("02a1b2c3d4e5")) == "qrf-02a1b2c3d4e5"


def test_saved_config_loads_back_with_defaults(tmp_path):
    path = str(tmp_path / "config.json")
    config.save(GOOD, path)
    loaded = config.load(path)
    assert loaded["name"] == "counter 1" and loaded["v"] == config.CONFIG_VERSION
    assert loaded["display"] is None  # the board's own panel (hal.DISPLAY) applies
    assert loaded["ntp"] == "pool.ntp.org"  # the time server that sets the clock
    assert loaded["release_keys"] == []  # no key: the unit refuses every update
    assert loaded["link"] == "wifi"
    assert not (tmp_path / "config.json.tmp").exists()


@pytest.mark.parametrize(
    "doc, reason",
    [
        ({"v": 2, **GOOD}, "version"),
        ({"v": 1, "servers": GOOD["servers"]}, "'secret'"),
        ({"v": 1, "secret": "x", "servers": ["http://example"]}, "ws://"),
        ({"v": 1, **GOOD, "servers": ["wss://qr.example/ws/device"]}, "needs a trust anchor"),
        ({"v": 1, **GOOD, "tls": {"ca": "not base64!"}}, "not base64"),
        ({"v": 1, **GOOD, "tls": "MIIB"}, '"tls" must be'),
        ({"v": 1, **GOOD, "ntp": ""}, '"ntp" must be the host name'),
        ({"v": 1, **GOOD, "release_keys": "ab" * 32}, '"release_keys" must be a list'),
        ({"v": 1, **GOOD, "release_keys": ["AB" * 32]}, "64 lowercase hex digits"),
        ({"v": 1, **GOOD, "release_keys": ["ab" * 31]}, "64 lowercase hex digits"),
        ({"v": 1, **GOOD, "link": "bluetooth"}, '"link" must be "wifi" or "usb"'),
        ([1, 2], "JSON object"),
    ],
)
def test_unusable_config_says_why(doc, reason):
    with pytest.raises(config.ConfigError, match=reason):
        config.parse(json.dumps(doc))


def test_a_tethered_unit_reaches_a_wss_server_without_a_trust_anchor_of_its_own():
    # Its bridge speaks TLS to the server and checks the certificate.
    doc = {"v": 1, **GOOD, "link": "usb", "servers": ["wss://qr.example/ws/device"]}
    assert config.parse(json.dumps(doc))["link"] == "usb"


def test_missing_config_means_not_provisioned(tmp_path):
    with pytest.raises(config.ConfigError, match="not provisioned"):
        config.load(str(tmp_path / "absent.json"))


def test_config_cut_off_at_every_byte_is_refused_on_the_unix_port(unix_port):
    text = config.dumps(GOOD)
    out = unix_port(
        "import sys\n"
        "from firmware import config\n"
        "text = sys.stdin.read()\n"
        "refused = 0\n"
        "for n in range(len(text)):\n"
        "    try:\n"
        "        config.parse(text[:n])\n"
        "    except config.ConfigError:\n"
        "        refused += 1\n"
        "print(refused, len(text), config.parse(text)['name'])\n",
        stdin=text.encode(),
    )
    assert out.split() == [str(len(text)), str(len(text)), "counter", "1"]


WSS = {**GOOD, "servers": ["wss://qr.example/ws/device"], "tls": {"ca": "MIIBcw=="}}


def test_a_wss_server_comes_with_its_trust_anchor_in_der(unix_port):
    """The same answer on the unit: the anchor is the DER that load_verify_locations takes."""
    code = (
        "from firmware import config\n"
        f"print(config.trust_anchor(config.parse({config.dumps(WSS)!r})).hex())\n"
        f"print(config.trust_anchor(config.parse({config.dumps(GOOD)!r})))\n"
    )
    out = unix_port(code)
    assert out.split() == ["30820173", "None"]
    assert config.trust_anchor(config.parse(config.dumps(WSS))) == bytes.fromhex("30820173")


def test_release_keys_are_checked_alike_on_the_unix_port(unix_port):
    keys = ["0f" * 32, "a1" * 32]
    usable = config.dumps({**GOOD, "release_keys": keys})
    cut = config.dumps({**GOOD, "release_keys": [keys[0][1:]]})
    with pytest.raises(config.ConfigError) as refusal:
        config.parse(cut)
    out = unix_port(
        "from firmware import config\n"
        f"print(config.parse({usable!r})['release_keys'])\n"
        "try:\n"
        f"    config.parse({cut!r})\n"
        "except config.ConfigError as e:\n"
        "    print(e)\n"
    )
    assert out.splitlines() == [repr(keys), str(refusal.value)]
