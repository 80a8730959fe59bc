"""The virtual board's own screen, which a unit does not have."""


def test_board_whose_config_names_no_panel_draws_on_its_128x64_screen(board):
    screen = (board.dir / "display.pbm").read_bytes()
    assert screen.startswith(b"P4\n128 64\n")  # the not-provisioned screen, from vscreen
    assert len(screen) == len(b"P4\n128 64\n") + 128 // 8 * 64
