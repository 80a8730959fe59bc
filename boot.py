# Runs first on every boot. Kept tiny: main.py starts the firmware.
import gc

gc.collect()
