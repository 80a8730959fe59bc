"""esp32 on a virtual board: the partition table, OTA updates with rollback, and NVS."""

import re

from tests.tools.vboard.port.conftest import run
from tests.tools.vboard.test_board import esptool, mpremote
from tools import esp_image
from tools.vboard.process import running_boards


def test_find_lists_the_table_with_the_vfs_main_c_registers_last(board):
    said = run(
        board,
        "from esp32 import Partition as P\n"
        "print([p.info() for p in P.find(P.TYPE_DATA)])\n"
        "print([p.info() for p in P.find()])\n"
        "print(P(P.RUNNING).info()[4], P.find(P.TYPE_DATA, label='vfs')[0].ioctl(4, 0))\n"
        "try:\n P(P.BOOT)\nexcept OSError as e:\n print(repr(e))\n",
    )
    assert said.splitlines() == [
        "[(1, 2, 36864, 24576, 'nvs', False), (1, 1, 61440, 4096, 'phy_init', False), "
        "(1, 129, 2097152, 2097152, 'vfs', False)]",
        "[(0, 0, 65536, 2031616, 'factory', False)]",
        "factory 512",
        "OSError(2,)",  # no otadata on the generic table: esp_ota_get_boot_partition finds none
    ]


def test_nvs_keeps_values_across_a_reset_until_the_flash_is_erased(board):
    run(board, "import esp32; n = esp32.NVS('bench'); n.set_i32('till', 7); n.commit()")
    start = len(board.log_text())
    mpremote(board.serial_url, "exec", "--no-follow", "import machine; machine.reset()")
    board.wait_for_log("qrfleet 0.1.0", start=start)
    said = run(
        board,
        "import esp32; n = esp32.NVS('bench'); print(n.get_i32('till'))\n"
        "try:\n n.get_i32('missing')\nexcept OSError as e:\n print(e)\n",
    )
    assert said.splitlines() == ["7", "(-4354, 'ESP_ERR_NVS_NOT_FOUND')"]
    boots = [int(n) for n in re.findall(r"boot (\d+) \(", board.log_text())]
    assert boots == list(range(1, len(boots) + 1))  # counted in NVS since the flash was made


def test_ota_update_boots_the_new_slot_and_rolls_back_unless_marked_valid(tmp_path):
    app = tmp_path / "app.bin"
    app.write_bytes(esp_image.app(version=b"v1.99.0").ljust(4096, b"\xff"))
    with running_boards(tmp_path / "boards", 1, extra_args=("--variant", "ota")) as (board,):
        board.wait_for_log("qrfleet 0.1.0")
        mpremote(board.serial_url, "fs", "cp", str(app), ":app.bin")

        def update():
            said = run(
                board,
                "from esp32 import Partition as P\n"
                "slot = P(P.RUNNING).get_next_update()\n"
                "slot.writeblocks(0, open('app.bin', 'rb').read())\n"
                "slot.set_boot()\n"
                "print(slot.info()[4])\n",
            )
            assert said == "ota_1\n"

        def reset_and_see():
            start = len(board.log_text())
            mpremote(board.serial_url, "exec", "--no-follow", "import machine; machine.reset()")
            log = board.wait_for_log('Type "help()" for more information.', start=start)
            code = "from esp32 import Partition as P; print(P(P.RUNNING).info()[4])"
            return run(board, code).strip(), log[start:]

        assert run(board, "from esp32 import Partition as P; print(P(P.RUNNING).info()[4])") == (
            "ota_0\n"
        )
        update()
        running, log = reset_and_see()
        assert running == "ota_1"
        assert "MicroPython v1.99.0 on" in log  # the new image's own version
        running, log = reset_and_see()  # not marked valid: the bootloader rolls back
        assert running == "ota_0"
        assert "MicroPython v1.99.0" not in log

        update()
        assert reset_and_see()[0] == "ota_1"
        run(board, "import esp32; esp32.Partition.mark_app_valid_cancel_rollback()")
        assert reset_and_see()[0] == "ota_1"  # marked valid: it stays


def test_erase_flash_wipes_nvs_as_on_a_unit(tmp_path):
    with running_boards(tmp_path / "boards", 1) as (board,):
        board.wait_for_log("qrfleet 0.1.0")
        run(board, "import esp32; n = esp32.NVS('bench'); n.set_i32('till', 7); n.commit()")
        start = len(board.log_text())
        esptool(board.serial_url, "erase-region", 0x9000, 0x6000)
        log = board.wait_for_log("qrfleet 0.1.0", start=start)
        assert "boot 1 (power-on)" in log[start:]  # the boot count, kept in NVS, starts over
        said = run(
            board,
            "import esp32\ntry:\n esp32.NVS('bench').get_i32('till')\nexcept OSError as e:\n"
            " print(e)\n",
        )
        assert said == "(-4354, 'ESP_ERR_NVS_NOT_FOUND')\n"
