"""The unit's identity and its configuration file.

Identity: the device id is derived from the eFuse MAC, so it survives reflashing and a unit
keeps its registration. The per-unit secret and the human name come from provisioning.

Configuration: `config.json` on the board's filesystem, versioned, written atomically (a
temporary file, then a rename, which LittleFS performs as one step) so a power cut mid-write
leaves either the old or the new file, never a half one. A missing, cut-off or otherwise
unusable file raises ConfigError with the reason; the firmware then shows "not provisioned".

A unit has no store of CA certificates, so a config with a wss:// server carries the one trust
anchor it checks the server's certificate against: `"tls": {"ca": "<base64 DER>"}`, the CA that
issued the server's certificate, or the server's own self-signed certificate (a pin).

Link: `"link": "wifi"` (the default) runs the session over Wi-Fi; `"usb"` over the USB UART,
through the bridge on the PC the unit is plugged into (firmware/net/tether.py), which speaks
TLS to a wss:// server for it: such a unit needs no trust anchor, no Wi-Fi and no clock.

Updates: `"release_keys": ["<64 hex>", ...]` are the Ed25519 public keys a release must be
signed by (firmware/ota); with none (the default) the unit refuses every update.
"""

import json
import os
from binascii import a2b_base64, hexlify

CONFIG_PATH = "config.json"
CONFIG_VERSION = 1
_REQUIRED = (("secret", str), ("servers", list))
# display None: the board's own (hal.DISPLAY). ntp: the time server that sets the clock a
# wss:// server's certificate dates are checked against (firmware/net/clock.py).
_DEFAULTS = (
    ("name", ""),
    ("display", None),
    ("wifi", None),
    ("tls", None),
    ("ntp", "pool.ntp.org"),
    ("link", "wifi"),
)
LINKS = ("wifi", "usb")


class ConfigError(ValueError):
    """The configuration is missing or unusable; the message says why."""


def device_id(mac):
    """`qrf-` and the 12 lower-case hex digits of the MAC: stable, printable, in every log."""
    return "qrf-" + hexlify(bytes(mac)).decode()


def parse(text):
    """Validate a config document; returns the dict with defaults filled in."""
    try:
        config = json.loads(text)
    except (ValueError, UnicodeError):
        raise ConfigError("config.json is not valid JSON (cut off or corrupted)") from None
    if not isinstance(config, dict):
        raise ConfigError("config.json must hold a JSON object")
    if config.get("v") != CONFIG_VERSION:
        raise ConfigError("config.json version %r is not %d" % (config.get("v"), CONFIG_VERSION))
    for key, kind in _REQUIRED:
        if not isinstance(config.get(key), kind) or not config[key]:
            raise ConfigError("config.json has no usable %r" % key)
    for url in config["servers"]:
        if not isinstance(url, str) or not (url.startswith("ws://") or url.startswith("wss://")):
            raise ConfigError("server %r is not a ws:// or wss:// URL" % (url,))
    for key, default in _DEFAULTS:
        config.setdefault(key, default)
    ntp = config["ntp"]
    if not isinstance(ntp, str) or not ntp or " " in ntp:
        raise ConfigError('config.json "ntp" must be the host name or address of a time server')
    if config["link"] not in LINKS:
        raise ConfigError('config.json "link" must be "wifi" or "usb", not %r' % (config["link"],))
    _check_tls(config)
    _check_release_keys(config)
    return config


def _check_release_keys(config):
    keys = config.setdefault("release_keys", [])  # a new list: the defaults hold no mutables
    if not isinstance(keys, list) or not all(_is_public_key(key) for key in keys):
        raise ConfigError(
            'config.json "release_keys" must be a list of release public keys, each 64 '
            "lowercase hex digits (provision the unit with --release-key FILE.pub)"
        )


def _is_public_key(key):
    return isinstance(key, str) and len(key) == 64 and not key.strip("0123456789abcdef")


def _check_tls(config):
    tls = config["tls"]
    if tls is not None:
        if not isinstance(tls, dict) or not isinstance(tls.get("ca"), str):
            raise ConfigError('config.json "tls" must be {"ca": "<base64 DER certificate>"}')
        try:
            a2b_base64(tls["ca"])
        except ValueError:
            raise ConfigError('config.json "tls.ca" is not base64') from None
        return
    if config["link"] == "usb":
        return  # the bridge speaks TLS to the server and checks its certificate
    for url in config["servers"]:
        if url.startswith("wss://"):
            raise ConfigError(
                "server %s needs a trust anchor (tls.ca) and the config has none: a unit has "
                "no CA store (provision it with --server-ca)" % url
            )


def trust_anchor(config):
    """The DER certificate wss:// servers are checked against, or None (ws:// only)."""
    tls = config["tls"]
    return a2b_base64(tls["ca"]) if tls else None


def load(path=CONFIG_PATH):
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        raise ConfigError("no config.json: the unit is not provisioned") from None
    return parse(text)


def dumps(config):
    doc = dict(config)
    doc["v"] = CONFIG_VERSION
    return json.dumps(doc)


def save(config, path=CONFIG_PATH):
    """Write atomically: the old file stays until the new one is complete."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(dumps(config))
    os.rename(tmp, path)
