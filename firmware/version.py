# The firmware's version, as units report it; `qrfleet release build` writes its own into a release.
VERSION = "0.1.0"
