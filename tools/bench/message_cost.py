"""What authenticating every message costs a unit: protocol 2 (sealed) beside plain JSON (the
protocol 1 messages), on the MicroPython Unix port, in one run.

    .venv/bin/python -m tools.bench.message_cost

For three messages as a unit meets them (a heartbeat it sends, a show_qr with an EMVCo payload
and one with an 1,800-character payload it receives), per message: the bytes on the wire, and
the microseconds (time.ticks_us, best of 5 runs of 200) to encode and send-seal a heartbeat,
or to open and decode a show_qr, with and without the MAC; plus the bytes allocated per
message with the GC off. A report, not a test: nothing is asserted. An ESP32 at 160 MHz runs
this code some 20-40 times slower than a desktop core; the ratio between the columns is the
figure that carries over.
"""

from tools import micropython
from tools.bench.qr_bench import merchant_payload

_RUNS = 200

_CODE = """
import gc, micropython, time
from firmware.proto import auth, messages

SESSION = ("5e" * 16, "aa" * 16, "bb" * 16, "qrf-a4cf12345678")
unit = auth.Channel(*SESSION, "unit")
heartbeat = dict(uptime_s=3600, free_heap=81234, rssi=-61, fw="0.1.0", screen="payment")


def cost(work, prepare=None):
    best = None
    for _ in range(5):
        if prepare:
            prepare()
        t = time.ticks_us()
        for _ in range(RUNS):
            work()
        took = time.ticks_diff(time.ticks_us(), t) / RUNS
        best = took if best is None or took < best else best
    if prepare:
        prepare()
    gc.collect()
    gc.disable()
    before = micropython.mem_total() if hasattr(micropython, "mem_total") else 0
    work()
    allocated = (micropython.mem_total() if hasattr(micropython, "mem_total") else 0) - before
    gc.enable()
    return best, allocated


def send_plain():
    return messages.encode("heartbeat", **heartbeat)


def send_sealed():
    return unit.seal(messages.encode("heartbeat", **heartbeat))


results = {"heartbeat": (len(send_plain()), cost(send_plain), len(send_sealed()), cost(send_sealed))}
for name, payload in PAYLOADS.items():
    text = messages.encode("show_qr", id=7, payload=payload, ecc="M")
    arriving = []

    def seal_a_round():
        global unit
        unit, server = auth.Channel(*SESSION, "unit"), auth.Channel(*SESSION, "server")
        arriving[:] = [server.seal(text) for _ in range(RUNS)]
        arriving.reverse()
        gc.collect()

    def receive_plain():
        return messages.from_server(text)

    def receive_sealed():
        return messages.from_server(unit.open(arriving.pop()))

    results[name] = (
        len(text), cost(receive_plain), len(text) + auth.SEAL_OVERHEAD, cost(receive_sealed, seal_a_round)
    )
print(repr(results))
"""


def main():
    payloads = {
        "show_qr emv": merchant_payload("150.00", "INV-000123", "COUNTER07"),
        "show_qr 1800": "A" * 1800,
    }
    code = f"RUNS = {_RUNS}\nPAYLOADS = {payloads!r}\n" + _CODE
    done = micropython.run(code, heap="1M", timeout=600)
    if done.returncode:
        raise SystemExit(done.stderr.decode() or done.stdout.decode())
    results = eval(done.stdout.decode())  # noqa: S307 - our own repr of numbers
    print(
        "Unix port, per message; each pair of columns: protocol 1 (plain JSON), protocol 2 (sealed)"
    )
    print(f"{'message':<14} {'bytes sent':>11} {'us to handle':>15} {'bytes allocated':>19}")
    for name in ["heartbeat", *payloads]:
        plain_len, plain, sealed_len, sealed = results[name]
        print(
            f"{name:<14} {plain_len:>5} {sealed_len:>5} {plain[0]:>7.1f} {sealed[0]:>7.1f}"
            f" {plain[1]:>9} {sealed[1]:>9}"
        )


if __name__ == "__main__":
    main()
