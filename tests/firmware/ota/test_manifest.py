"""A release's manifest: every field is checked, and a refusal says what is wrong and what to do,
alike on the host and on the unit."""

import json

import pytest

from firmware.ota import manifest, target
from tests.firmware.both import run_both

GOOD = {
    "format": 1,
    "version": "0.2.0",
    "boards": ["virtual"],
    "micropython": ["1.29"],
    "min_free": 40960,
    "files": [
        {"path": "firmware/__init__.mpy", "size": 0, "sha256": "e3" * 32},
        {"path": "firmware/ota/manifest.mpy", "size": 5000, "sha256": "0a" * 32},
    ],
}


def changed(**fields):
    return json.dumps({**GOOD, **fields})


def with_file(**fields):
    return changed(files=[GOOD["files"][0], {**GOOD["files"][1], **fields}])


def without(field):
    return json.dumps({k: v for k, v in GOOD.items() if k != field})


MANY = [{"path": f"firmware/m{i:03d}.mpy", "size": 1, "sha256": "ab" * 32} for i in range(97)]

# (manifest text, what the refusal says)
REFUSED = [
    ("{not json", "not valid JSON: build the release again"),
    ("[1]", "must be a JSON object"),
    (changed(signed_by="me"), "has a field 'signed_by' this firmware does not know"),
    (without("boards"), "has no 'boards'"),
    (changed(format=2), "manifest format 2 is not 1"),
    (changed(format=True), "manifest format True is not 1"),
    (changed(version=""), "\"version\" '' must be 1 to 32 characters"),
    (changed(version="1" * 33), "must be 1 to 32 characters of A-Z a-z 0-9 . _ + -"),
    (changed(version="0.2 beta"), "name the release like 0.2.0"),
    (changed(boards=[]), '"boards" must be a non-empty list of board names (esp32, virtual)'),
    (changed(boards="esp32"), '"boards" must be a non-empty list'),
    (changed(boards=["esp8266"]), "names 'esp8266', which is no board: use esp32, virtual"),
    (changed(micropython=[]), '"micropython" must be a non-empty list'),
    (changed(micropython=["1"]), "names '1': a MicroPython version is \"major.minor\""),
    (changed(micropython=["1.29.0"]), "names '1.29.0'"),
    (changed(micropython=["v1.29"]), "names 'v1.29'"),
    (changed(micropython=[1.29]), "names 1.29"),
    (changed(min_free=-1), '"min_free" must be a number of bytes (an integer >= 0), not -1'),
    (changed(min_free="1"), "not '1'"),
    (changed(min_free=1.5), "not 1.5"),
    (changed(files=[]), '"files" must be a non-empty list of {path, size, sha256}'),
    (changed(files=MANY), "lists 97 files, more than the 96 a unit takes"),
    (changed(files=GOOD["files"][::-1]), "sorted by path: firmware/__init__.mpy comes after"),
    (changed(files=GOOD["files"][:1] * 2), "lists firmware/__init__.mpy twice"),
    (changed(files=[{**GOOD["files"][0], "mode": 1}]), '"files" item 0 must be {"path", '),
    (changed(files=[{"path": "firmware/a.mpy"}]), "and nothing else"),
    (with_file(path="boot.mpy"), "'boot.mpy' must be a relative path under firmware/"),
    (with_file(path="firmware/../boot.mpy"), "(no . or ..)"),
    (with_file(path="firmware/./x.mpy"), "'firmware/./x.mpy' must be"),
    (with_file(path="firmware//x.mpy"), "'firmware//x.mpy' must be"),
    (with_file(path="firmware/x.py"), "ending in .mpy"),
    (with_file(path="firmware/a b.mpy"), "its parts of A-Z a-z 0-9 _ . -"),
    (with_file(path="/firmware/x.mpy"), "'/firmware/x.mpy' must be"),
    (with_file(size=-1), "firmware/ota/manifest.mpy: size must be a number of bytes"),
    (with_file(size="5000"), "not '5000'"),
    (with_file(sha256="0A" * 32), "sha256 must be 64 lowercase hex digits"),
    (with_file(sha256="0a" * 31), "sha256 must be 64 lowercase hex digits"),
]


def test_a_good_manifest_parses_to_its_fields():
    assert manifest.parse(json.dumps(GOOD)) == GOOD


def test_a_manifest_tools_release_built_parses(tmp_path):
    from tools import release

    release.keygen(tmp_path / "key")
    bundle = json.loads(release.build("0.2.0+test", tmp_path / "key", target="esp32"))
    parsed = manifest.parse(bundle["manifest"])
    assert (parsed["version"], parsed["boards"]) == ("0.2.0+test", ["esp32"])
    assert parsed["min_free"] == manifest.min_free(f["size"] for f in parsed["files"])


@pytest.mark.parametrize("text, reason", REFUSED)
def test_a_bad_field_is_refused_with_its_sentence(text, reason):
    with pytest.raises(manifest.ManifestError) as refusal:
        manifest.parse(text)
    assert reason in str(refusal.value)
    assert isinstance(refusal.value, ValueError)


def test_min_free_is_each_file_in_whole_blocks_plus_one_and_eight_spare_blocks():
    assert manifest.min_free([]) == 8 * 4096
    assert manifest.min_free([0, 4096, 4097]) == (1 + 2 + 3 + 8) * 4096


def test_a_release_for_another_board_or_micropython_is_refused():
    release = manifest.parse(json.dumps(GOOD))
    assert target.mismatch(release, "virtual", (1, 29, 0)) is None
    assert target.mismatch(release, "esp32", (1, 29, 0)) == (
        "release 0.2.0 is for virtual, this unit is esp32"
    )
    assert target.mismatch(release, "virtual", (1, 30, 0, "preview")) == (
        "release 0.2.0 runs on MicroPython 1.29, this unit runs 1.30"
    )


def test_cpython_is_no_board():
    assert target.board() is None


def test_the_unix_port_refuses_alike_and_is_a_virtual_board(unix_port):
    texts = [text for text, _ in REFUSED]
    good = json.dumps(GOOD)
    code = (
        "from firmware.ota import manifest\n"
        f"for text in {texts!r}:\n"
        "    try:\n"
        "        manifest.parse(text)\n"
        "    except manifest.ManifestError as e:\n"
        "        print(e)\n"
        f"print(manifest.parse({good!r})['min_free'])\n"
    )
    on_cpython, on_unit = run_both(unix_port, code)
    assert on_unit == on_cpython
    assert len(on_unit.splitlines()) == len(REFUSED) + 1
    board = unix_port(
        "import sys\n"
        "from firmware.ota import manifest, target\n"
        "print(target.board())\n"
        f"print(target.mismatch(manifest.parse({good!r}), target.board(), "
        "sys.implementation.version))\n"
    )
    assert board.split() == ["virtual", "None"]
