"""Segmentation is optimal: no split of the data into modes takes fewer bits."""

from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st
from qrcodegen import QrSegment

from firmware.qr import segments

from .strategies import ALNUM

# Table 3 count widths and the data bits per mode, written out independently of the encoder.
WIDTHS = {"numeric": (10, 12, 14), "alphanumeric": (9, 11, 13), "byte": (8, 16, 16)}


def cost(mode, n):
    if mode == "numeric":
        return 10 * (n // 3) + (0, 4, 7)[n % 3]
    if mode == "alphanumeric":
        return 11 * (n // 2) + 6 * (n % 2)
    return 8 * n


def fewest_bits(src, grp):
    """Exhaustive: every split point and every mode each piece allows."""
    text = src.decode("latin-1")

    def allows(mode, piece):
        if mode == "numeric":
            return piece.isdigit() and piece.isascii()
        if mode == "alphanumeric":
            return all(c in ALNUM for c in piece)
        return True

    @cache
    def best(i):
        if i == len(text):
            return 0
        return min(
            4 + WIDTHS[mode][grp] + cost(mode, j - i) + best(j)
            for j in range(i + 1, len(text) + 1)
            for mode in WIDTHS
            if allows(mode, text[i:j])
        )

    return best(0)


data = st.lists(
    st.sampled_from(["0", "7", "A", "Z", " ", ":", "a", "é", "12", "345", "ABC"]), max_size=30
).map("".join)


@settings(max_examples=400, deadline=None)
@given(data, st.integers(0, 2))
def test_segments_take_the_fewest_bits_possible(text, grp):
    src = text.encode()
    spans = segments.optimal(src, grp)
    assert segments.total_bits(spans, grp) == fewest_bits(src, grp)
    # and the segments cover the data in order, each one non-empty
    bounds = [segments.unpack(s)[:2] for s in spans]
    assert [a for a, _ in bounds] == [0] + [b for _, b in bounds[:-1]] if bounds else not src
    assert all(a < b for a, b in bounds) and (not bounds or bounds[-1][1] == len(src))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=ALNUM + "abcxyz", max_size=200), st.sampled_from([1, 10, 27]))
def test_never_more_bits_than_the_references_single_mode_segments(text, version):
    grp = segments.group(version)
    ours = segments.total_bits(segments.optimal(text.encode(), grp), grp)
    assert ours <= QrSegment.get_total_bits(QrSegment.make_segments(text), version)


def test_a_merchant_string_is_split_into_modes():
    src = b"00020101021226370016A000000677010111shop@bank5204541153033565802IN"
    modes = [segments.unpack(s)[2] for s in segments.optimal(src, 0)]
    assert 1 in modes and 4 in modes  # long digit runs numeric, the address in bytes
