"""Board support, chosen in this one place: a real ESP32 or the virtual board.

Nothing else in the firmware knows which board it runs on. Both modules provide:

    DISPLAY                     the display profile when the config names none (or is unusable)
    unique_id() -> bytes        the eFuse MAC (6 bytes)
    reset()                     hard reset, as machine.reset()
    reset_cause() -> str        "power-on", "hard", "soft", "watchdog", "panic" or "deep-sleep"
    boot_count() -> int         boots since the flash was written
    wlan() -> WLAN              connect(ssid, password), isconnected(), rssi()
    open_connection(h, p, ssl)  the asyncio streams of a TCP/TLS connection over Wi-Fi
    Watchdog(timeout_ms)        feed(); resets the board when not fed in time
    safe_mode() -> bool         skip the application (a held button, or a flag file)
    i2c(...), spi(...), pin(n)  buses and pins for the display profiles (ESP32 only)
    show_frame(w, h, rows)      virtual board only: publish a frame as the board's screen
"""

import sys

if sys.platform == "esp32":
    from .esp32 import *  # noqa: F403
else:
    from .unix import *  # noqa: F403
