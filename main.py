# Starts the firmware: loader.py picks the version (the flashed one, or an update) and imports
# it; the loader is let go before the firmware runs.
import loader

app = loader.start()
del loader
app.main()
