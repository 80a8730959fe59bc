"""`qrfleet provision`: virtual boards become registered, linked units online at a real server."""

import base64
import json
import shlex
import time

import pytest
import zxingcpp
from esptool import cmds
from PIL import Image

from firmware import config as config_file
from firmware.config import CONFIG_PATH
from qrfleet import cli
from tools import flash, gang, provision, release, serverproc
from tools.certs import CertificateAuthority
from tools.serverproc import running_server
from tools.vboard import screen
from tools.vboard.process import running_boards

from .units import filesystem_on

TOKEN = "admin-secret"


@pytest.fixture
def server(tmp_path):
    with running_server(tmp_path, TOKEN) as server:
        yield server


@pytest.fixture
def vboards(request, tmp_path):
    count = getattr(request, "param", 1)
    with running_boards(tmp_path / "vboards", count) as vboards:
        for board in vboards:
            board.wait_for_log("qrfleet ")
        yield vboards


def provision_command(server, *vboards, extra=()):
    ports = [word for b in vboards for word in ("--port", b.serial_url)]
    return [
        "provision",
        *ports,
        "--server",
        server.url,
        "--admin-token",
        TOKEN,
        "--target",
        "virtual",
        *extra,
    ]


def device(server, device_id):
    return server.admin().get(f"/api/devices/{device_id}")


def wait_for_screen(board, predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        codes = screen.decode_qr(board.screen) if board.screen.exists() else []
        if predicate(codes):
            return codes
        if time.monotonic() > deadline:
            raise TimeoutError(f"{board.device_id} shows {codes!r}")
        time.sleep(0.2)


def showing_ready(server, board):
    """The idle screen of a linked unit: a status screen (no QR) the unit reported drawing."""
    return device(server, board.device_id)["screen"] == "status"


def unit_config(board):
    fs = filesystem_on(board)  # held while its file is open
    with fs.open(CONFIG_PATH, "r") as f:
        return f.read()


def test_provisioned_unit_is_online_and_shows_its_pairing_qr(server, vboards, capsys):
    board = vboards[0]

    assert cli.main(provision_command(server, board)) == 0

    out = capsys.readouterr().out
    assert f"{board.device_id} online" in out
    assert device(server, board.device_id)["status"] == "online"
    pairing = wait_for_screen(board, lambda codes: codes)[0]
    assert pairing.startswith(f"qrfleet://pair?device={board.device_id}&code=")


def test_a_unit_provisioned_for_an_https_server_comes_online_over_wss(tmp_path, vboards):
    """--server-ca (PEM here) goes into the unit's config as DER; the unit checks the server's
    certificate against it, and the tool's own API calls do too; --ntp names the time server
    that sets its clock first (on the bench, every NTP host is the supervisor's); the
    --release-key goes into its config as the key its updates must be signed by."""
    shop = CertificateAuthority(tmp_path, "shop")
    release.keygen(tmp_path / "release-key")
    with running_server(tmp_path, TOKEN, tls=shop.issue(), ca_file=shop.pem) as server:
        board = vboards[0]

        extra = ["--server-ca", str(shop.pem), "--ntp", "time.shop.example"]
        extra += ["--release-key", str(tmp_path / "release-key.pub")]
        assert cli.main(provision_command(server, board, extra=extra)) == 0

        assert device(server, board.device_id)["status"] == "online"
        config = json.loads(unit_config(board))
        assert config["servers"] == [server.device_url]
        assert base64.b64decode(config["tls"]["ca"]) == shop.der
        assert config["ntp"] == "time.shop.example"
        public_key = (tmp_path / "release-key.pub").read_text().strip()
        assert config["release_keys"] == [public_key]


def test_an_https_server_without_server_ca_is_refused_before_any_unit_is_touched(capsys):
    with pytest.raises(SystemExit) as refused:
        cli.main(
            ["provision", "--port", "/dev/null", "--server", "https://qr.example", "--admin-token"]
            + [TOKEN]
        )
    assert "https://qr.example needs --server-ca FILE: a unit has no CA store" in str(refused.value)


def test_a_unit_on_usb_is_registered_and_told_which_bridge_brings_it_online(
    server, vboards, capsys
):
    """--link usb: no Wi-Fi, no trust anchor, and no wait for a unit that can come online only
    once a bridge runs on the PC it is plugged into; asked to wait, it says the same."""
    board = vboards[0]

    assert cli.main(provision_command(server, board, extra=["--link", "usb"])) == 0

    bridge = f"qrfleet bridge --port {board.serial_url} --server {server.url}"
    out = capsys.readouterr().out
    assert f"{board.device_id} registered" in out
    assert f"{board.device_id}: to bring it online, start `{bridge}` on the PC the unit" in out
    config = json.loads(unit_config(board))
    assert config["link"] == "usb"
    assert not {"wifi", "tls", "ntp"} & config.keys()
    assert device(server, board.device_id)["status"] == "offline"

    order = provision.Order([server.url], TOKEN, target="virtual", register_only=True)
    order.link, order.wait_online, order.online_timeout_s = "usb", True, 1
    with pytest.raises(TimeoutError) as waited:
        provision.provision_unit(board.serial_url, order)
    assert f"it comes online through a bridge: start `{bridge}` on the PC" in str(waited.value)


def test_wifi_settings_for_a_unit_on_usb_are_refused_before_any_unit_is_touched():
    with pytest.raises(SystemExit) as refused:
        cli.main(
            ["provision", "--port", "/dev/null", "--server", "http://qr.example"]
            + ["--admin-token", TOKEN, "--link", "usb", "--wifi-ssid", "Shop-WiFi"]
        )
    assert "--wifi-ssid is for units on Wi-Fi: a unit on --link usb reaches its server through" in (
        str(refused.value)
    )


def test_a_unit_on_usb_needs_no_trust_anchor_for_an_https_server():
    """The bridge speaks TLS to the server and checks its certificate, not the unit."""
    config = provision.unit_config(
        "secret", ["https://qr.example"], "till 1", "ssd1306-i2c", link="usb"
    )
    parsed = config_file.parse(config_file.dumps(config))  # as the unit reads it
    assert parsed["link"] == "usb" and parsed["tls"] is None


def test_an_unusable_release_key_is_refused_before_any_unit_is_touched(tmp_path):
    (tmp_path / "key.pub").write_text("not a key\n")
    with pytest.raises(SystemExit) as refused:
        cli.main(
            ["provision", "--port", "/dev/null", "--server", "http://qr.example"]
            + ["--admin-token", TOKEN, "--release-key", str(tmp_path / "key.pub")]
        )
    assert "key.pub: a release key (.pub) must hold 64 hex digits" in str(refused.value)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "neither a PEM nor a DER certificate"),
        (b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n" * 2, "holds 2 PEM"),
    ],
)
def test_an_unusable_server_ca_file_says_why(tmp_path, content, reason):
    path = tmp_path / "ca.pem"
    path.write_bytes(content)
    with pytest.raises(provision.ProvisionError, match=reason):
        provision.read_server_ca(path)


def test_unit_linked_at_provisioning_shows_its_idle_screen(server, vboards):
    server.admin().post("/api/locations", {"location_id": "shop", "name": "Shop"})
    server.admin().post(
        "/api/agents", {"agent_id": "till-1", "name": "Till 1", "location_id": "shop"}
    )
    board = vboards[0]

    assert (
        cli.main(
            provision_command(
                server, board, extra=["--location", "shop", "--agent", "till-1", "--name", "front"]
            )
        )
        == 0
    )

    unit = device(server, board.device_id)
    assert (unit["status"], unit["agent_id"], unit["name"]) == ("online", "till-1", "front")
    wait_for_screen(board, lambda codes: not codes and showing_ready(server, board))


def test_provisioned_unit_is_refused_again_unless_forced(server, vboards):
    board = vboards[0]
    assert cli.main(provision_command(server, board)) == 0
    first_config = unit_config(board)

    assert cli.main(provision_command(server, board)) == 1
    order = provision.Order([server.url], TOKEN, target="virtual")
    questions = []
    with pytest.raises(
        provision.AlreadyProvisioned, match="has a config.json already: run again with --force"
    ):
        provision.provision_unit(board.serial_url, order, confirm=lambda q: questions.append(q))
    assert questions == [
        f"{board.device_id} on {board.serial_url} has a config.json already; "
        "replace it (it gets a new secret)?"
    ]
    assert unit_config(board) == first_config

    assert cli.main(provision_command(server, board, extra=["--force"])) == 0
    assert unit_config(board) != first_config  # a new secret
    assert device(server, board.device_id)["status"] == "online"


def test_unit_without_micropython_is_refused_with_the_command_that_flashes_it(server, vboards):
    board = vboards[0]
    with flash.open_unit(board.serial_url) as unit:
        cmds.erase_flash(unit.esp)
    order = provision.Order([server.url], TOKEN, target="virtual")

    with pytest.raises(flash.NoPartitionTable, match="no partition table at 0x8000") as refused:
        provision.provision_unit(board.serial_url, order)

    assert f"qrfleet flash --port {board.serial_url} --firmware" in str(refused.value)
    assert (board.dir / "flash.bin").read_bytes() == b"\xff" * (4 << 20)


def test_files_only_copies_over_mpremote_to_a_running_unit(server, vboards):
    board = vboards[0]
    assert cli.main(provision_command(server, board, extra=["--files-only"])) == 0
    assert device(server, board.device_id)["status"] == "online"
    assert '"servers"' in unit_config(board)


def test_server_down_leaves_the_unit_written_and_the_printed_command_finishes_the_job(
    tmp_path, vboards
):
    board = vboards[0]
    with running_server(tmp_path, TOKEN) as server:
        port = server.url.rsplit(":", 1)[1]
    order = provision.Order([server.url], TOKEN, target="virtual", agent=None)

    with pytest.raises(provision.NotRegistered) as refused:
        provision.provision_unit(board.serial_url, order)

    message = str(refused.value)
    assert "could not be reached" in message
    assert '"secret"' in unit_config(board)
    retry = message.split("run: ", 1)[1]
    assert retry.startswith(f"qrfleet provision --port {board.serial_url} --server {server.url}")

    proc = serverproc.spawn(
        f"sqlite:///{tmp_path}/qrfleet.db", TOKEN, f"{tmp_path}/again.log", port=int(port)
    )
    try:
        assert serverproc.read_url(proc) == server.url
        assert cli.main([*shlex.split(retry)[1:], "--admin-token", TOKEN]) == 0
        assert device(server, board.device_id)["status"] == "online"
    finally:
        serverproc.stop(proc)


@pytest.mark.parametrize("vboards", [3], indirect=True)
def test_serial_link_cut_mid_write_fails_that_unit_and_the_others_finish(server, vboards):
    order = provision.Order([server.url], TOKEN, target="virtual")
    victim = vboards[1]

    def job(port, report):
        def watch(description, done=None, total=None):
            report(description, done, total)
            if port == victim.serial_url and done and done > total // 3:
                (victim.dir / "cut-serial").touch()

        return provision.provision_unit(port, order, watch)

    outcomes = gang.run([b.serial_url for b in vboards], job)

    failed = [o for o in outcomes if not o.ok]
    assert [o.port for o in failed] == [victim.serial_url]
    assert "serial link" in failed[0].error and "Check the USB cable" in failed[0].error
    for board in (vboards[0], vboards[2]):
        assert device(server, board.device_id)["status"] == "online"


@pytest.mark.slow
@pytest.mark.parametrize("vboards", [8], indirect=True)
def test_eight_units_at_once_end_online_linked_where_asked(server, vboards):
    admin = server.admin()
    admin.post("/api/locations", {"location_id": "shop", "name": "Shop"})
    admin.post("/api/agents", {"agent_id": "till-1", "name": "Till 1", "location_id": "shop"})
    linked = {b.serial_url for b in vboards[:4]}
    plain = provision.Order([server.url], TOKEN, target="virtual", location="shop")
    to_till = provision.Order(
        [server.url], TOKEN, target="virtual", location="shop", agent="till-1"
    )

    started = time.monotonic()
    outcomes = gang.run(
        [b.serial_url for b in vboards],
        lambda port, report: provision.provision_unit(
            port, to_till if port in linked else plain, report
        ),
    )
    elapsed = time.monotonic() - started

    assert [o.error for o in outcomes if not o.ok] == []
    for board in vboards:
        unit = device(server, board.device_id)
        assert unit["status"] == "online"
        if board.serial_url in linked:
            assert unit["agent_id"] == "till-1"
            wait_for_screen(board, lambda codes, b=board: not codes and showing_ready(server, b))
        else:
            assert unit["agent_id"] is None
            pairing = wait_for_screen(board, lambda codes: codes)[0]
            assert pairing.startswith(f"qrfleet://pair?device={board.device_id}&code=")
    print(f"8 units provisioned in parallel in {elapsed:.1f} s")


def test_pairing_qr_printed_in_the_terminal_scans_back_to_its_text():
    pairing = "qrfleet://pair?device=qrf-240ac4a1b2c3&code=8V2QED3Q"
    rows = provision.terminal_qr(pairing).split("\n")
    # Each character is two modules stacked; ink (a block) is a light module.
    top = {"\u2588": 1, "\u2580": 1, "\u2584": 0, " ": 0}
    bottom = {"\u2588": 1, "\u2580": 0, "\u2584": 1, " ": 0}
    picture = Image.new("L", (len(rows[0]), 2 * len(rows)))
    for y, row in enumerate(rows):
        for x, char in enumerate(row):
            picture.putpixel((x, 2 * y), 255 * top[char])
            picture.putpixel((x, 2 * y + 1), 255 * bottom[char])
    picture = picture.resize((picture.width * 8, picture.height * 8), Image.NEAREST)
    assert [r.text for r in zxingcpp.read_barcodes(picture)] == [pairing]
