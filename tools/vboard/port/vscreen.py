# The virtual board's screen, which a unit does not have: frames go to the supervisor, which
# keeps the current one as display.pbm in the board's directory. The firmware's virtual-*
# display profiles draw here; DISPLAY is the profile of a board whose config names none.

import link

DISPLAY = "virtual-128x64"


def show_frame(width, height, rows):
    """Hand a MONO_HLSB frame (1 = black, as PBM's P4 raster) to the supervisor."""
    link.tell(b"qrfleet-port: screen %d %d %d\n" % (width, height, len(rows)))
    link.tell(rows)
