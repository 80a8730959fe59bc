# Starts the firmware; everything else lives in firmware/app.py.
import firmware.app

firmware.app.main()
