"""The virtual board's download mode answers the real esptool as an ESP32 and its flasher stub do.

Most tests run esptool 5.6 against a `RomBootloader` behind a TCP port
(`socket://`, where esptool cannot toggle DTR/RTS, so every connection is
treated as a reset into download mode). The rest speak the protocol packet by
packet to check what esptool never provokes: bad checksums, writes past the
end of flash, a line cut in the middle of a block.
"""

import hashlib
import random
import socket
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import esptool
import pytest
from esptool.cmds import detect_chip, run_stub
from esptool.util import FatalError
from hypothesis import given, settings
from hypothesis import strategies as st

from tools.vboard import slip
from tools.vboard.bootloader import (
    FLASH_BEGIN,
    FLASH_DATA,
    FLASH_DEFL_BEGIN,
    FLASH_DEFL_DATA,
    FLASH_DEFL_END,
    FLASH_END,
    GET_SECURITY_INFO,
    MEM_BEGIN,
    MEM_DATA,
    MEM_END,
    READ_FLASH,
    SYNC,
    SYNC_PAYLOAD,
    RomBootloader,
    checksum,
)

MAC = bytes.fromhex("240ac4a1b2c3")
FLASH_SIZE = 4 * 1024 * 1024
SECTOR = 0x1000
ESPTOOL = Path(sys.executable).parent / "esptool"


class RamFlash:
    """Flash held in memory, with the surface of the board's file-backed `FlashImage`."""

    def __init__(self, content):
        self.data = bytearray(content)
        self.size = len(self.data)

    def read(self, offset, length):
        return bytes(self.data[offset : offset + length])

    def write(self, offset, data):
        assert offset + len(data) <= self.size, "the bootloader wrote past the end of flash"
        self.data[offset : offset + len(data)] = data

    def erase(self, offset, length):
        self.write(offset, b"\xff" * length)


def old_content():
    """What was in flash before: a recognisable pattern, so stray writes and erases show."""
    return (b"old flash content " * (FLASH_SIZE // 18 + 1))[:FLASH_SIZE]


def compressible_image(size, seed):
    rng = random.Random(seed)
    words = [b"qrfleet", b"payment", b"counter", b"agent", b"0x%04x" % rng.randrange(1 << 16)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


def random_image(size, seed):
    return random.Random(seed).randbytes(size)


def expected_after_writes(before, writes):
    """Flash after esptool wrote these images: each image, its sectors' rest erased, all else kept."""
    flash = bytearray(before)
    for offset, image in writes:
        start = offset - offset % SECTOR
        end = -(-(offset + len(image)) // SECTOR) * SECTOR
        flash[start:end] = b"\xff" * (end - start)
        flash[offset : offset + len(image)] = image
    return bytes(flash)


class SerialBridge:
    """A TCP port standing in for the board's UART; each connection starts in download mode."""

    def __init__(self, board):
        self.board = board
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.url = f"socket://127.0.0.1:{self._server.getsockname()[1]}"
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stopping.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(0.2)
                self.board.on_enter()
                self._relay(conn)

    def _relay(self, conn):
        while not self._stopping.is_set():
            out = self.board.data_to_send()
            if out:
                conn.sendall(out)
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except ConnectionError:
                return
            if not data:
                return
            self.board.receive_data(data)

    def close(self):
        self._stopping.set()
        self._thread.join(timeout=5)
        self._server.close()


@pytest.fixture
def flash():
    return RamFlash(old_content())


@pytest.fixture
def board(flash):
    return RomBootloader(flash, MAC)


@pytest.fixture
def port(board):
    bridge = SerialBridge(board)
    yield bridge.url
    bridge.close()


def run_esptool(port, *args, stub=True):
    """esptool as a library, the way a script embeds it, at a field tool's usual baud rate."""
    options = ["--port", port, "--baud", "460800", "--before", "no-reset", "--after", "no-reset"]
    esptool.main(options + ([] if stub else ["--no-stub"]) + [str(a) for a in args])


def esptool_command(port, *args):
    return subprocess.run(
        [ESPTOOL, "--port", port, "--before", "no-reset", "--after", "no-reset", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- esptool end to end ------------------------------------------------------------------


def test_chip_id_describes_an_esp32_d0wd_v3_and_its_efuse_mac(port):
    done = esptool_command(port, "chip-id")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Detecting chip type... ESP32" in done.stdout
    assert "Chip type:          ESP32-D0WD-V3 (revision v3.1)" in done.stdout
    assert "Features:           Wi-Fi, BT, Dual Core + LP Core, 240MHz" in done.stdout
    assert "Crystal frequency:  40MHz" in done.stdout
    assert "Stub flasher running." in done.stdout
    assert "MAC:                24:0a:c4:a1:b2:c3" in done.stdout


@pytest.mark.parametrize("stub", [True, False], ids=["stub", "rom"])
def test_read_mac_through_the_library_equals_the_efuse_mac(port, stub):
    with detect_chip(port, connect_mode="no-reset") as esp:
        assert esp.CHIP_NAME == "ESP32"
        if stub:
            esp = run_stub(esp)
        assert bytes(esp.read_mac()) == MAC
        assert esp.get_chip_description() == "ESP32-D0WD-V3 (revision v3.1)"


@pytest.mark.parametrize("stub", [True, False], ids=["stub", "rom"])
@pytest.mark.parametrize("compress", [True, False], ids=["deflate", "plain"])
def test_write_flash_leaves_exactly_the_images_in_flash(port, flash, tmp_path, stub, compress):
    text = tmp_path / "text.bin"
    text.write_bytes(compressible_image(150_000, seed=1))
    noise = tmp_path / "noise.bin"
    noise.write_bytes(random_image(9_000, seed=2))
    before = flash.read(0, FLASH_SIZE)

    # 0x40400 is not sector aligned: esptool erases from 0x40000, as on a real chip.
    run_esptool(
        port,
        "write-flash",
        "--compress" if compress else "--no-compress",
        0x10000,
        text,
        0x40400,
        noise,
        0x3FD000,
        noise,
        stub=stub,
    )

    writes = [
        (0x10000, text.read_bytes()),
        (0x40400, noise.read_bytes()),
        (0x3FD000, noise.read_bytes()),
    ]
    assert flash.read(0, FLASH_SIZE) == expected_after_writes(before, writes)


def test_esptool_command_writes_with_its_defaults_and_verifies(port, flash, tmp_path):
    image = tmp_path / "app.bin"
    image.write_bytes(compressible_image(60_000, seed=3))
    written = esptool_command(port, "write-flash", 0x20000, image)
    assert written.returncode == 0, written.stdout + written.stderr
    assert " compressed) at 0x00020000" in written.stdout
    verified = esptool_command(port, "verify-flash", 0x20000, image)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Verification successful (digest matched)." in verified.stdout
    assert flash.read(0x20000, 60_000) == image.read_bytes()


@pytest.mark.parametrize("stub", [True, False], ids=["stub", "rom"])
def test_verify_flash_notices_a_single_changed_byte(port, flash, tmp_path, stub):
    image = compressible_image(20_000, seed=4)
    flash.write(0x50000, image)
    good = tmp_path / "good.bin"
    good.write_bytes(image)
    run_esptool(port, "verify-flash", 0x50000, good, stub=stub)
    bad = tmp_path / "bad.bin"
    bad.write_bytes(image[:12_345] + b"!" + image[12_346:])
    with pytest.raises(FatalError, match="Verification failed"):
        run_esptool(port, "verify-flash", 0x50000, bad, stub=stub)


@pytest.mark.parametrize("stub, size", [(True, 70_000), (False, 3_000)], ids=["stub", "rom"])
def test_read_flash_returns_what_is_in_flash(port, flash, tmp_path, stub, size):
    flash.write(0x70000, random_image(size, seed=5))
    out = tmp_path / "read.bin"
    run_esptool(port, "read-flash", 0x6FF00, size + 0x100, out, stub=stub)
    assert out.read_bytes() == flash.read(0x6FF00, size + 0x100)


@pytest.mark.parametrize("stub", [True, False], ids=["stub", "rom"])
def test_erase_region_empties_only_that_region(port, flash, stub):
    before = flash.read(0, FLASH_SIZE)
    run_esptool(port, "erase-region", 0x9000, 0x6000, stub=stub)
    after = flash.read(0, FLASH_SIZE)
    assert after[0x9000:0xF000] == b"\xff" * 0x6000
    assert after[:0x9000] == before[:0x9000] and after[0xF000:] == before[0xF000:]


def test_erase_flash_empties_the_whole_chip(port, flash):
    run_esptool(port, "erase-flash")
    assert flash.read(0, FLASH_SIZE) == b"\xff" * FLASH_SIZE


def test_flash_id_reports_a_4mb_winbond_chip(port):
    done = esptool_command(port, "flash-id")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Manufacturer: ef" in done.stdout
    assert "Device: 4016" in done.stdout
    assert "Detected flash size: 4MB" in done.stdout


def test_esptool_run_from_the_rom_leaves_download_mode_for_the_app(port, board):
    run_esptool(port, "run", stub=False)
    assert board.reboot_requested


def test_image_that_does_not_fit_is_refused_before_anything_is_written(port, flash, tmp_path):
    before = flash.read(0, FLASH_SIZE)
    image = tmp_path / "big.bin"
    image.write_bytes(random_image(8192, seed=6))
    with pytest.raises(FatalError, match="will not fit"):
        run_esptool(port, "write-flash", FLASH_SIZE - 4096, image)
    assert flash.read(0, FLASH_SIZE) == before


def test_board_of_another_chip_is_detected_as_such_and_refused_when_esp32_is_required(flash):
    bridge = SerialBridge(RomBootloader(flash, MAC, chip="esp32s2"))
    try:
        with detect_chip(bridge.url, connect_mode="no-reset") as esp:
            assert esp.CHIP_NAME == "ESP32-S2"
            assert bytes(esp.read_mac()) == MAC
        with pytest.raises(FatalError, match="This chip is ESP32-S2, not ESP32"):
            esptool.main(
                ["--port", bridge.url, "--before", "no-reset", "--chip", "esp32", "chip-id"]
            )
    finally:
        bridge.close()


# -- the protocol, packet by packet ---------------------------------------------------------


OK_ROM = bytes(4)
OK_STUB = b"\x00\x00"


class Host:
    """esptool's side of the serial protocol, one request at a time."""

    def __init__(self, board):
        self.board = board
        self._decoder = slip.SlipDecoder()
        self._unread = []  # packets that arrived after an answer (READ_FLASH data)

    def send(self, op, data=b"", chk=0):
        self.send_raw(slip.encode(struct.pack("<BBHI", 0, op, len(data), chk) + data))

    def send_raw(self, wire):
        self.board.receive_data(wire)

    def packets(self):
        unread, self._unread = self._unread, []
        return unread + self._decoder.feed(self.board.data_to_send())

    def request(self, op, data=b"", chk=0):
        """The status of the answer: 4 bytes from the ROM, 2 from the stub."""
        self.send(op, data, chk)
        packets = self.packets()
        answers = [p for p in packets if p[:2] == bytes((1, op))]
        assert answers, f"no answer to command 0x{op:02x}"
        self._unread = packets[packets.index(answers[-1]) + 1 :]
        return answers[-1][-2:] if self.board.stub_running else answers[-1][-4:]

    def block(self, op, payload, seq, chk=None):
        header = struct.pack("<IIII", len(payload), seq, 0, 0)
        return self.request(op, header + payload, checksum(payload) if chk is None else chk)

    def start_stub(self):
        code, address = b"\x01" * 100, 0x40080000
        assert (
            self.request(MEM_BEGIN, struct.pack("<IIII", len(code), 1, 0x1800, address)) == OK_ROM
        )
        assert self.block(MEM_DATA, code, 0) == OK_ROM
        self.send(MEM_END, struct.pack("<II", 0, address))
        assert self.packets()[-1] == b"OHAI"


@pytest.fixture
def host(board):
    board.on_enter()
    board.data_to_send()
    return Host(board)


def test_entering_download_mode_prints_the_rom_banner(board):
    board.on_enter()
    banner = board.data_to_send().decode()
    assert banner.startswith("ets Jul 29 2019 12:21:46\r\n")  # a revision 3 chip
    assert "rst:0x1 (POWERON_RESET),boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))" in banner
    assert banner.endswith("waiting for download\r\n")


def test_sync_gets_eight_answers_nonzero_from_the_rom_and_zero_from_the_stub(host):
    host.send(SYNC, SYNC_PAYLOAD)
    answers = host.packets()
    assert len(answers) == 8 and all(struct.unpack_from("<I", a, 4)[0] != 0 for a in answers)
    host.start_stub()
    host.send(SYNC, SYNC_PAYLOAD)
    answers = host.packets()
    assert len(answers) == 8 and all(struct.unpack_from("<I", a, 4)[0] == 0 for a in answers)


def test_rom_refuses_get_security_info_as_an_invalid_message_like_a_real_esp32(host):
    assert host.request(GET_SECURITY_INFO) == b"\x01\x05\x00\x00"


@pytest.mark.parametrize(
    "stub, refusal", [(False, b"\x01\x07\x00\x00"), (True, b"\xc1\x00")], ids=["rom", "stub"]
)
def test_block_with_a_bad_checksum_is_refused_and_not_written(host, flash, stub, refusal):
    if stub:
        host.start_stub()
    before = flash.read(0x40000, 0x1000)
    ok = OK_STUB if stub else OK_ROM
    assert host.request(FLASH_BEGIN, struct.pack("<IIII", 0x400, 1, 0x400, 0x40000)) == ok
    payload = b"\x5a" * 0x400
    assert host.block(FLASH_DATA, payload, 0, chk=checksum(payload) ^ 1) == refusal
    if stub:
        assert flash.read(0x40000, 0x1000) == before
    assert host.block(FLASH_DATA, payload, 0) == ok
    assert flash.read(0x40000, 0x400) == payload


@pytest.mark.parametrize(
    "stub, refusal", [(False, b"\x01\x08\x00\x00"), (True, b"\xc4\x00")], ids=["rom", "stub"]
)
def test_write_past_the_end_of_flash_is_refused_before_anything_is_erased(
    host, flash, stub, refusal
):
    if stub:
        host.start_stub()
    before = flash.read(0, FLASH_SIZE)
    begin = struct.pack("<IIII", 0x2000, 2, 0x1000, FLASH_SIZE - 0x1000)
    assert host.request(FLASH_BEGIN, begin) == refusal
    assert host.block(FLASH_DATA, b"\0" * 0x1000, 0) != (OK_STUB if stub else OK_ROM)
    assert flash.read(0, FLASH_SIZE) == before


def test_block_out_of_sequence_is_refused(host, flash):
    host.start_stub()
    assert host.request(FLASH_BEGIN, struct.pack("<IIII", 0x800, 2, 0x400, 0x40000)) == OK_STUB
    assert host.block(FLASH_DATA, b"A" * 0x400, 1) != OK_STUB
    assert host.block(FLASH_DATA, b"A" * 0x400, 0) == OK_STUB


def test_compressed_block_sent_again_after_a_lost_answer_is_written_once(host, flash):
    host.start_stub()
    image = compressible_image(30_000, seed=7)
    packed = zlib.compress(image, 9)
    blocks = [packed[i : i + 0x400] for i in range(0, len(packed), 0x400)]
    begin = struct.pack("<IIII", len(image), len(blocks), 0x400, 0x80000)
    assert host.request(FLASH_DEFL_BEGIN, begin) == OK_STUB
    for seq, block in enumerate(blocks):
        assert host.block(FLASH_DEFL_DATA, block, seq) == OK_STUB
        assert host.block(FLASH_DEFL_DATA, block, seq) == OK_STUB  # esptool's retry
    assert host.request(FLASH_DEFL_END, struct.pack("<I", 1)) == OK_STUB
    assert flash.read(0x80000, len(image)) == image


def test_line_cut_mid_block_keeps_the_acknowledged_blocks_and_the_old_flash_beyond(host, flash):
    host.start_stub()
    before = flash.read(0, FLASH_SIZE)
    image = random_image(0x3000, seed=8)
    assert (
        host.request(FLASH_BEGIN, struct.pack("<IIII", len(image), 3, 0x1000, 0x100800)) == OK_STUB
    )
    assert host.block(FLASH_DATA, image[:0x1000], 0) == OK_STUB
    assert host.block(FLASH_DATA, image[0x1000:0x2000], 1) == OK_STUB
    last = image[0x2000:]
    wire = slip.encode(
        struct.pack("<BBHI", 0, FLASH_DATA, 16 + len(last), checksum(last))
        + struct.pack("<IIII", len(last), 2, 0, 0)
        + last
    )
    host.send_raw(wire[: len(wire) // 2])  # the cable comes out here

    host.board.on_enter()  # plugged back in: the ROM boots again
    after = flash.read(0, FLASH_SIZE)
    assert (
        after[0x100000:0x100800] == b"\xff" * 0x800
    )  # the head of the first sector, as esptool warns
    assert after[0x100800:0x102800] == image[:0x2000]
    assert after[0x102800:] == before[0x102800:]
    assert after[:0x100000] == before[:0x100000]


def test_line_cut_during_a_rom_write_leaves_the_announced_region_erased_not_garbled(host, flash):
    before = flash.read(0, FLASH_SIZE)
    assert host.request(FLASH_BEGIN, struct.pack("<IIII", 0x2000, 8, 0x400, 0x120000)) == OK_ROM
    assert host.block(FLASH_DATA, b"B" * 0x400, 0) == OK_ROM
    host.send_raw(slip.encode(struct.pack("<BBHI", 0, FLASH_DATA, 0x410, 0))[:300])
    host.board.on_enter()
    after = flash.read(0, FLASH_SIZE)
    assert after[0x120000:0x122000] == b"B" * 0x400 + b"\xff" * 0x1C00
    assert after[:0x120000] == before[:0x120000] and after[0x122000:] == before[0x122000:]


def test_flash_end_from_the_rom_runs_the_app_so_the_board_asks_for_a_reboot(host):
    assert host.request(FLASH_BEGIN, struct.pack("<IIII", 0, 0, 0x400, 0)) == OK_ROM
    assert not host.board.reboot_requested
    host.request(FLASH_END, struct.pack("<I", 1))
    assert host.board.reboot_requested
    host.send(SYNC, SYNC_PAYLOAD)
    assert host.packets() == []  # the app runs now, not the loader


def test_stub_told_to_reboot_comes_back_as_the_rom_loader(host):
    host.start_stub()
    assert host.request(FLASH_BEGIN, struct.pack("<IIII", 0, 0, 0x4000, 0)) == OK_STUB
    host.send(FLASH_END, struct.pack("<I", 0))
    assert b"rst:0x3 (SW_RESET)" in host.board.data_to_send()
    assert not host.board.stub_running and not host.board.reboot_requested


def test_stub_read_flash_sends_one_packet_per_acknowledgement_then_the_md5(host, flash):
    host.start_stub()
    flash.write(0x1000, random_image(0x2800, seed=9))
    assert host.request(READ_FLASH, struct.pack("<IIII", 0x1000, 0x2800, 0x1000, 64)) == OK_STUB
    received = b""
    while True:
        packets = host.packets()
        assert len(packets) == 1, "the stub waits for each acknowledgement"
        if len(received) == 0x2800:
            assert packets[0] == hashlib.md5(received).digest()
            break
        received += packets[0]
        host.send_raw(slip.encode(struct.pack("<I", len(received))))
    assert received == flash.read(0x1000, 0x2800)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=5), st.data())
def test_slip_packets_survive_any_split_of_the_byte_stream(packets, data):
    packets = [p for p in packets if p]
    wire = b"".join(slip.encode(p) for p in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    decoder = slip.SlipDecoder()
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        received += decoder.feed(wire[start:end])
    assert received == packets


words = st.lists(st.integers(0, 0x20000), max_size=6).map(lambda w: struct.pack(f"<{len(w)}I", *w))
requests = st.tuples(
    st.integers(0x02, 0x14) | st.integers(0xD0, 0xD4),  # every command byte esptool uses
    st.tuples(words, st.binary(max_size=24)).map(b"".join),
    st.integers(0, 0xFF),
)


@settings(max_examples=150, deadline=None)
@given(st.booleans(), st.lists(requests, max_size=8))
def test_malformed_requests_never_crash_the_board_and_it_still_answers_afterwards(stub, sequence):
    board = RomBootloader(RamFlash(b"\xff" * 0x20000), MAC)
    host = Host(board)
    if stub:
        host.start_stub()
    for op, data, chk in sequence:
        host.send(op, data, chk)
        host.packets()
    if not board.reboot_requested:
        host.send_raw(slip.encode(b"stop"))  # ends a READ_FLASH the sequence may have started
        host.send(SYNC, SYNC_PAYLOAD)
        assert any(p[:2] == bytes((1, SYNC)) for p in host.packets())


def test_noise_before_a_packet_is_ignored_like_the_rom_does(host):
    host.send_raw(b"garbage\r\n")
    assert host.request(SYNC, SYNC_PAYLOAD) == OK_ROM
