"""The virtual ESP32 board: the real firmware on the MicroPython Unix port, a flash image,
an RFC 2217 serial port, DTR/RTS resets and a screen kept as a PBM file."""
