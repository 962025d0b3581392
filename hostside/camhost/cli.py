"""camhost: build, flash and control camagent cameras.

The command line is a thin layer that hands each subcommand to its module.

Each module in COMMAND_MODULES defines `register(subparsers)`, which adds its
subcommands and sets `func` on them; `func(args)` returns the exit code.
"""
import argparse
import importlib
import sys

from . import __version__
from .errors import CamhostError

COMMAND_MODULES = (
    "ctl",        # camhost ctl ...     MQTT control of agents
    "demo",       # camhost demo        simulated camera + embedded broker
    "image",      # camhost image ...   build, repack, mpy, budget
    "flashcmds",  # camhost backup|flash|verify|restore   (flashrom)
    "console",    # camhost console|flash-uboot           (stock U-Boot over serial)
    "actioncam",  # camhost actioncam ... cheap wifi action cameras
    "toupcam",    # camhost toupcam ...   ToupTek wifi microscope cameras
)


def build_parser():
    parser = argparse.ArgumentParser(prog="camhost", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version="camhost " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module("." + name, __package__).register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except CamhostError as e:
        print("camhost: error: %s" % e, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("camhost: interrupted", file=sys.stderr)
        return 130
