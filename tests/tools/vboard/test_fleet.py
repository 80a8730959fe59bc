"""`qrfleet vboard --link usb`: boards tethered over USB, with no Wi-Fi to fall back on."""

import json

from firmware.config import CONFIG_PATH
from tests.tools.units import filesystem_on
from tests.tools.vboard.port.conftest import run
from tools.serverproc import running_server
from tools.vboard.process import running_boards

TOKEN = "fleet-admin"


def test_boards_on_usb_are_provisioned_for_it_and_have_no_access_point(tmp_path):
    with running_server(tmp_path, TOKEN) as server:
        extra = ["--server", server.url, "--admin-token", TOKEN, "--link", "usb"]
        with running_boards(tmp_path / "boards", 1, extra_args=extra) as (board,):
            board.wait_for_log("qrfleet ")
            fs = filesystem_on(board)  # held while its file is open
            with fs.open(CONFIG_PATH, "r") as f:
                config = json.loads(f.read())
            assert config["link"] == "usb"
            assert server.admin().get(f"/api/devices/{board.device_id}")["status"] == "offline"

            said = run(
                board,
                "import network\n"
                "sta = network.WLAN(network.STA_IF); sta.active(True); sta.connect('bench', '')\n"
                "print(sta.isconnected(), sta.scan())\n",
                resume=False,
            )
            assert said.splitlines() == ["False []"]
