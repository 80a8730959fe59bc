import pytest

from tools.vboard.board import VirtualBoard
from tools.vboard.process import BoardInfo, running_boards


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """One fresh board (no config: the firmware stops at "not provisioned") per test module."""
    with running_boards(tmp_path_factory.mktemp("boards"), 1) as (board,):
        board.wait_for_log("qrfleet ")
        yield board


@pytest.fixture
def radio_board(background, tmp_path):
    """A board in this process, so that the test can take its Wi-Fi down."""
    board = VirtualBoard(tmp_path / "board")
    background.run(board.start())
    info = BoardInfo(board.device_id, board.serial_url, board.dir)
    info.wait_for_log("qrfleet 0.1.0")
    yield board, info
    background.run(board.stop())


def run(board, code, resume=True):
    """`mpremote exec`; `resume` keeps what the board is running (no soft reset first)."""
    from tests.tools.vboard.test_board import mpremote

    return mpremote(board.serial_url, *(["resume"] if resume else []), "exec", code)
