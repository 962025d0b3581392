"""Host-side facts about the cameras camagent supports (board-notes).

One entry per board: which OpenIPC board it builds on, the SoC name OpenIPC
puts in its file names, and the wifi driver package its module needs. The
agent has its own board table (agent/camagent/boards.py) for pins; this one
only knows what the host needs to build and repack images.
"""
from collections import namedtuple

from .errors import CamhostError

Board = namedtuple("Board", "name title openipc_board soc wifi_package fragment kconfig_choice")

BOARDS = {
    "imou-ranger-rc-4mp": Board(
        name="imou-ranger-rc-4mp",
        title="IMOU Ranger RC 4MP (SSC337, iComm SV6155P)",
        openipc_board="ssc337_lite",
        soc="ssc337",
        wifi_package="BR2_PACKAGE_SSV615X_OPENIPC",
        fragment="imou_ranger_rc_4mp.fragment",
        kconfig_choice="BR2_PACKAGE_CAMAGENT_BOARD_IMOU_RANGER_RC_4MP",
    ),
    "imou-ranger-rc-3mp": Board(
        name="imou-ranger-rc-3mp",
        title="IMOU Ranger RC 3MP (SSC332 running SSC333 images, iComm SV6115)",
        openipc_board="ssc333_lite",
        soc="ssc333",
        wifi_package="BR2_PACKAGE_SSV635X_OPENIPC",
        fragment="imou_ranger_rc_3mp.fragment",
        kconfig_choice="BR2_PACKAGE_CAMAGENT_BOARD_IMOU_RANGER_RC_3MP",
    ),
}


def board(name):
    """The Board called `name`, or a CamhostError naming the known ones."""
    try:
        return BOARDS[name]
    except KeyError:
        raise CamhostError("unknown board %r: choose one of %s"
                           % (name, ", ".join(sorted(BOARDS)))) from None


def release_name(b):
    """OpenIPC's release archive for the board, e.g. openipc.ssc337-nor-lite.tgz."""
    return "openipc.%s-nor-lite.tgz" % b.soc
