import pytest

from tools import micropython
from tools.background import BackgroundLoop, wait_for  # noqa: F401 - tests import wait_for here


class UnixPort:
    """Runs snippets on the MicroPython Unix port with the repository on sys.path."""

    def __call__(self, code, heap=micropython.DEFAULT_HEAP, timeout=120, stdin=b""):
        done = micropython.run(code, heap=heap, timeout=timeout, stdin=stdin)
        out = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0:
            pytest.fail(
                f"MicroPython exited with {done.returncode}\n--- stdout\n{out}\n"
                f"--- stderr\n{done.stderr.decode('utf-8', 'replace')}",
                pytrace=False,
            )
        return out


@pytest.fixture(scope="session")
def unix_port():
    """`unix_port(code, heap="160K")` -> stdout; fails the test if the snippet raises."""
    return UnixPort()


@pytest.fixture
def background():
    bg = BackgroundLoop()
    yield bg
    bg.close()
