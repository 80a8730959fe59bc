"""The unit boots to a clear "not provisioned" screen from any damaged config, never crashes."""

from firmware import config

GOOD = {
    "secret": "ab" * 16,
    "servers": ["ws://127.0.0.1:9/ws/device"],
    "name": "till 2",
    "display": "virtual-128x64",
}


def test_config_cut_off_at_every_byte_boots_to_not_provisioned_on_the_unix_port(
    unix_port, tmp_path
):
    text = config.dumps(GOOD)
    out = unix_port(
        "import os, sys\n"
        f"os.chdir({str(tmp_path)!r})\n"
        "from firmware import app\n"
        "text = sys.stdin.read()\n"
        "booted = 0\n"
        "for n in range(len(text)):\n"
        "    with open('config.json', 'w') as f:\n"
        "        f.write(text[:n])\n"
        "    app.main()  # returns to the REPL after showing the screen\n"
        "    booted += 1\n"
        "print('booted', booted)\n",
        stdin=text.encode(),
        compiled=True,
    )
    lines = out.splitlines()
    assert lines[-1] == f"booted {len(text)}"
    refusals = [line for line in lines if line.startswith("qrfleet: not provisioned:")]
    assert len(refusals) == len(text)
    assert not any("Traceback" in line for line in lines)


def test_safe_mode_skips_the_application(unix_port, tmp_path):
    (tmp_path / "safe_mode").write_text("")
    (tmp_path / "config.json").write_text(config.dumps(GOOD))
    out = unix_port(
        f"import os\nos.chdir({str(tmp_path)!r})\nfrom firmware import app\napp.main()\n",
        compiled=True,
    )
    assert "safe mode, application skipped" in out
