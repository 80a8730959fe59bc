"""tools/display_table.py and the table it wrote into docs/displays.md."""

from tools import display_table


def test_docs_table_matches_what_the_code_draws():
    doc = display_table.DOC.read_text()
    assert display_table.BEGIN + "\n" + display_table.table() + display_table.END in doc


def test_table_names_the_largest_payload_per_panel_and_ecc():
    rows = {(size, ecc): row for size, _, ecc, *row in display_table.rows()}
    assert len(rows) == 4 * 4
    # 128x64 at ECC M: version 10 at 1 px per module, 213 bytes; version 2 at 2 px, 26 bytes.
    assert rows[("128x64", "M")] == [10, 513, 311, 213, 1, 26, 0]
    # Panels of 135 pixels and more stop at render.MAX_QR_VERSION, 20: 858 bytes at ECC L, at
    # 2 px per module on a 320x240 panel.
    assert rows[("320x240", "L")][:5] == [20, 2061, 1249, 858, 2]
