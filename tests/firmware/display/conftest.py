from tools import framebuf

# The display firmware imports `framebuf`; on CPython that is the stand-in.
framebuf.install()
