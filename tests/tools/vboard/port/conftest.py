import pytest

from tools.vboard.process import running_boards


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """One fresh board (no config: the firmware stops at "not provisioned") per test module."""
    with running_boards(tmp_path_factory.mktemp("boards"), 1) as (board,):
        board.wait_for_log("qrfleet ")
        yield board


def run(board, code, resume=True):
    """`mpremote exec`; `resume` keeps what the board is running (no soft reset first)."""
    from tests.tools.vboard.test_board import mpremote

    return mpremote(board.serial_url, *(["resume"] if resume else []), "exec", code)
