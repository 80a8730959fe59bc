"""Benchmark of firmware.qr against segno and qrcode (CPython) and on the MicroPython Unix port.

    .venv/bin/python -m tools.bench.qr_bench [--quick]

Three payloads at ECC M: an EMVCo merchant string (~150 bytes, built with firmware.qr.emv),
a UPI URI (~75 bytes) and 500 random alphanumerics. Reports, in one run:
- CPython: time per encode for firmware.qr, segno and qrcode, with ratios to firmware.qr,
  and the version each produces (qrcodegen's too);
- Unix port: time per encode (time.ticks_us), also right after a symbol of another version
  (the function-pattern grid is rebuilt), bytes allocated per encode with the GC off
  (micropython.mem_total delta), and the smallest `-X heapsize` in which importing the
  encoder and one encode succeed, from source (.py) and precompiled (.mpy), by bisection.
A report, not a test: nothing is asserted.
"""

import argparse
import random
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

from firmware.qr import emv, encode
from tools import micropython
from tools.firmware_check import mpy_cross

ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


def merchant_payload(amount, invoice, counter):
    """An EMVCo merchant QR (~150 bytes): one sale at a test shop's counter."""
    return emv.merchant(
        [(26, [(0, "A000000677010111"), (1, "0066999999999")])],
        "TEST MERCHANT",
        "BENGALURU",
        mcc="5411",
        amount=amount,
        additional=[(1, invoice), (7, counter)],
    )


def payloads():
    """name -> payload, the three the targets are stated for."""
    merchant = merchant_payload("150.00", "INV-000123", "COUNTER07")
    upi = "upi://pay?pa=merchant@okbank&pn=Test%20Shop&am=150.00&cu=INR&tn=INV000123"
    rnd = random.Random(500)
    alnum = "".join(rnd.choice(ALNUM) for _ in range(500))
    return {"emv": merchant, "upi": upi, "alnum500": alnum}


def per_call(fn, budget=0.5):
    """Seconds per call: best of 5 rounds, each long enough to be timed well."""
    n = 1
    while True:
        t = timeit.timeit(fn, number=n)
        if t > budget / 5 or n > 1 << 16:
            break
        n *= 4
    return min(timeit.repeat(fn, number=n, repeat=5)) / n


def cpython(data):
    import qrcode
    import segno
    from qrcodegen import QrCode, QrSegment

    def with_qrcode():
        q = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
        q.add_data(data, optimize=20)  # qrcode's own mode splitting (its default)
        q.make(fit=True)
        q.get_matrix()
        return q

    runs = {
        "firmware.qr": lambda: encode(data, "M"),
        "segno": lambda: segno.make_qr(data, error="m", boost_error=False),
        "qrcode": with_qrcode,
    }
    times = {name: per_call(fn) for name, fn in runs.items()}
    versions = {
        "firmware.qr": encode(data, "M").version,
        "segno": segno.make_qr(data, error="m", boost_error=False).version,
        "qrcode": with_qrcode().version,
        "qrcodegen": QrCode.encode_segments(
            QrSegment.make_segments(data), QrCode.Ecc.MEDIUM, boostecl=False
        ).get_version(),
    }
    return times, versions


_UNIX_TIMING = """
import gc, micropython, time
from firmware.qr import encode
data = sys.stdin.buffer.read().decode()
encode(data)  # warm: builds the version's function grid and generator polynomial
best = None
for _ in range(5):  # best of 5 rounds: other processes share the machine
    gc.collect()
    t0 = time.ticks_us()
    for _ in range(40):
        encode(data)
    t = time.ticks_diff(time.ticks_us(), t0) / 40
    best = t if best is None or t < best else best
cold = None
for i in range(10):  # right after a symbol of another version: its grid is rebuilt
    encode("x" * 60, version=20 + i % 5)
    t0 = time.ticks_us()
    encode(data)
    t = time.ticks_diff(time.ticks_us(), t0)
    cold = t if cold is None or t < cold else cold
gc.collect()
gc.disable()
m0 = micropython.mem_total()
for _ in range(10):
    encode(data)
m1 = micropython.mem_total()
gc.enable()
print(best, cold, (m1 - m0) / 10)
"""

_UNIX_FIT = """
from firmware.qr import encode
encode(sys.stdin.buffer.read().decode())
print("ok")
"""


def unix_port(data):
    done = micropython.run(_UNIX_TIMING, heap="1M", stdin=data.encode())
    if done.returncode:
        raise RuntimeError(done.stderr.decode())
    us, cold_us, allocated = done.stdout.split()
    return float(us) / 1000, float(cold_us) / 1000, float(allocated)


def _fits(data, heap_bytes, path):
    done = micropython.run(_UNIX_FIT, heap=str(heap_bytes), path=(path,), stdin=data.encode())
    return done.returncode == 0 and done.stdout.strip() == b"ok"


def smallest_heap(data, path=micropython.REPO_ROOT, lo=2048, hi=512 * 1024, step=256):
    """Smallest heap (bytes, to `step`) in which import + one encode succeed."""
    if not _fits(data, hi, path):
        return None
    while hi - lo > step:
        mid = (lo + hi) // 2
        if _fits(data, mid, path):
            hi = mid
        else:
            lo = mid
    return hi


def compiled_package(out):
    """firmware/qr compiled to .mpy for this machine (x64), as a board image holds it."""
    src = micropython.REPO_ROOT / "firmware"
    (out / "firmware" / "qr").mkdir(parents=True)
    (out / "firmware" / "__init__.py").write_text("")
    for py in sorted((src / "qr").glob("*.py")):
        if py.name == "_cpython.py":
            continue
        subprocess.run(
            [
                mpy_cross(),
                "-march=x64",
                "-o",
                str(out / "firmware" / "qr" / (py.stem + ".mpy")),
                str(py),
            ],
            check=True,
        )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip the heap bisection")
    args = parser.parse_args(argv)

    print(f"Python {sys.version.split()[0]}; MicroPython {micropython.binary()}")
    print()
    print("CPython, ECC M: time per encode (ratio = peer time / firmware.qr time) and version")
    print(
        f"{'payload':10} {'bytes':>5}  {'firmware.qr':>11}  {'segno':>15}  {'qrcode':>15}  versions (ours/segno/qrcode/qrcodegen)"
    )
    data_sets = payloads()
    for name, data in data_sets.items():
        times, versions = cpython(data)
        ours = times["firmware.qr"]
        cells = [f"{ours * 1000:8.2f} ms"]
        for peer in ("segno", "qrcode"):
            cells.append(f"{times[peer] * 1000:7.2f} ms x{times[peer] / ours:4.1f}")
        v = versions
        print(
            f"{name:10} {len(data.encode()):5}  {cells[0]:>11}  {cells[1]:>15}  {cells[2]:>15}  "
            f"{v['firmware.qr']}/{v['segno']}/{v['qrcode']}/{v['qrcodegen']}"
        )

    print()
    print(
        "MicroPython Unix port, ECC M: per encode (targets for emv: < 3 ms, < 16 KB, heap <= 48K)"
    )
    header = f"{'payload':10} {'time':>9}  {'new version':>11}  {'allocated':>11}"
    if not args.quick:
        header += f"  {'min heap .py':>12}  {'min heap .mpy':>13}"
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        mpy_path = None if args.quick else compiled_package(Path(tmp))
        for name, data in data_sets.items():
            ms, cold_ms, allocated = unix_port(data)
            line = f"{name:10} {ms:6.3f} ms  {cold_ms:8.3f} ms  {allocated / 1024:7.2f} KiB"
            if not args.quick:
                src_heap = smallest_heap(data)
                mpy_heap = smallest_heap(data, path=mpy_path)
                line += f"  {src_heap / 1024:10.2f} K  {mpy_heap / 1024:11.2f} K"
            print(line)


if __name__ == "__main__":
    main()
