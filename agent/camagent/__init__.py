"""camagent: the on-camera agent (MicroPython 1.22 unix port, and CPython for development)."""

VERSION = "0.1.0"
