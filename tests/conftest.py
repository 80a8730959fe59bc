import pytest

from tools import image, micropython
from tools.background import BackgroundLoop, wait_for  # noqa: F401 - tests import wait_for here


class UnixPort:
    """Runs snippets on the MicroPython Unix port with the repository on sys.path, or with the
    firmware compiled to .mpy as it is on a board (`compiled=True`: importing the whole
    application from source would spend heap on the compiler that a board never spends)."""

    def __init__(self, compiled_dir):
        self.compiled_dir = compiled_dir
        self._built = False

    def __call__(self, code, heap=micropython.DEFAULT_HEAP, timeout=120, stdin=b"", compiled=False):
        path = (micropython.REPO_ROOT,)
        if compiled:
            path = (self._compiled(),)
        done = micropython.run(code, heap=heap, timeout=timeout, stdin=stdin, path=path)
        out = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0:
            pytest.fail(
                f"MicroPython exited with {done.returncode}\n--- stdout\n{out}\n"
                f"--- stderr\n{done.stderr.decode('utf-8', 'replace')}",
                pytrace=False,
            )
        return out

    def _compiled(self):
        if not self._built:
            for rel, data in image.firmware_files("virtual").items():
                target = self.compiled_dir / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            self._built = True
        return self.compiled_dir


@pytest.fixture(scope="session")
def unix_port(tmp_path_factory):
    """`unix_port(code, heap="160K", compiled=False)` -> stdout; fails the test if it raises."""
    return UnixPort(tmp_path_factory.mktemp("firmware-mpy"))


@pytest.fixture
def background():
    bg = BackgroundLoop()
    yield bg
    bg.close()
