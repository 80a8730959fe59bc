"""Read a virtual board's screen (display.pbm) as a picture, and the QR codes on it."""

from pathlib import Path

from PIL import Image

_SCALE = 4


def load(path):
    """The screen as a PIL image (mode "1"); PBM is replaced atomically, so a read is whole."""
    with Image.open(path) as img:
        return img.convert("1")


def save_png(pbm_path, png_path, scale=_SCALE):
    img = load(pbm_path)
    img.resize((img.width * scale, img.height * scale), Image.NEAREST).save(png_path)
    return png_path


def decode_qr(pbm_path, scale=_SCALE):
    """Texts of the QR codes zxing-cpp finds on the screen (scaled up, nearest neighbour)."""
    import zxingcpp

    img = load(pbm_path).convert("L")
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return [r.text for r in zxingcpp.read_barcodes(img)]


def wait_for_qr(pbm_path, prefix="", timeout=10):
    """The text of the first QR on the screen that starts with `prefix`, once one shows."""
    from tools.background import wait_for

    found = []

    def shows():
        if Path(pbm_path).exists():  # a board draws its first frame a moment after it boots
            found[:] = [t for t in decode_qr(pbm_path) if t.startswith(prefix)]
        return found

    wait_for(shows, timeout, f"{pbm_path} to show a QR starting with {prefix!r}")
    return found[0]
