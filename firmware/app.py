"""The one place that wires the HAL, the configuration and the firmware's tasks."""

import asyncio
import gc

from firmware import config, hal

FIRMWARE_VERSION = "0.1.0"
_WATCHDOG_MS = 30000


def main():
    unit = config.device_id(hal.unique_id())
    try:
        cfg = config.load()
        state = "provisioned as %r" % cfg["name"]
    except config.ConfigError as e:
        state = "not provisioned: %s" % e
    print("qrfleet %s on %s, boot %d (%s), %s"
          % (FIRMWARE_VERSION, unit, hal.boot_count(), hal.reset_cause(), state))
    asyncio.run(_idle(hal.Watchdog(_WATCHDOG_MS)))


async def _idle(watchdog):
    while True:
        watchdog.feed()
        gc.collect()
        await asyncio.sleep(1)
