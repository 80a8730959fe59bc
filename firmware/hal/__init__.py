"""Board support, chosen in this one place by what the port offers.

A unit and a virtual board both have the ESP32 port's modules (the virtual board's port layer
provides machine, network and esp32 with the same names and behaviour: tools/vboard/port/), so
both run `esp32`. A virtual board also has `vscreen`, the screen its supervisor keeps, and draws
there when its config names no panel. Only the plain Unix port, where the firmware's tests run,
has none of them and gets the stand-ins of `unix`. The HAL provides:

    DISPLAY                     the display profile when the config names none (or is unusable)
    unique_id() -> bytes        the eFuse MAC (6 bytes)
    reset()                     hard reset, as machine.reset()
    reset_cause() -> str        "power-on", "hard", "soft", "watchdog", "panic" or "deep-sleep"
    boot_count() -> int         boots since the flash was written
    wlan() -> WLAN              connect(ssid, password), isconnected(), rssi() (None: not joined)
    open_connection(h, p, ssl)  the asyncio streams of a TCP/TLS connection over Wi-Fi
    set_clock(datetime)         set the RTC, as machine.RTC().datetime(datetime) takes it
    Watchdog(timeout_ms)        feed(); resets the board when not fed in time
    safe_mode() -> bool         skip the application (a held button, or a flag file)
    i2c(...), spi(...), pin(n)  buses and pins for the display profiles
    show_frame(w, h, rows)      publish a frame as the screen (the virtual-* profiles)
"""

try:
    import esp32  # noqa: F401 - the ESP32 port's own module
except ImportError:
    from .unix import *  # noqa: F403
else:
    from .esp32 import *  # noqa: F403

    try:
        from vscreen import DISPLAY, show_frame  # noqa: F401 - a virtual board's own screen
    except ImportError:
        pass
