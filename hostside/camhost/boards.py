"""Host-side facts about the cameras camagent supports (board-notes).

One entry per board: the OpenIPC board it builds on and the kernel module of its wifi
module (the name /etc/wireless/usb-camagent loads); the rest follows from the names.
The agent has its own board table (agent/camagent/boards.py) for pins; this one only
knows what the host needs to build and repack images.
"""
from collections import namedtuple

from .errors import CamhostError


class Board(namedtuple("Board", "name openipc_board wifi_driver")):
    __slots__ = ()

    @property
    def soc(self):
        """The SoC in OpenIPC's file names (uImage.ssc337): ssc337_lite -> ssc337."""
        return self.openipc_board.split("_")[0]

    @property
    def release_name(self):
        """OpenIPC's release archive for the board, e.g. openipc.ssc337-nor-lite.tgz."""
        return "openipc.%s-nor-lite.tgz" % self.soc

    @property
    def wlandev(self):
        """Its U-Boot `wlandev`, in OpenIPC's <driver>-<soc>-<camera> form, which
        /etc/wireless/usb hands to usb-camagent."""
        return "%s-%s-imou-ranger-rc" % (self.wifi_driver, self.soc)

    @property
    def fragment(self):
        """Its defconfig fragment in buildroot-package/configs/."""
        return self.name.replace("-", "_") + ".fragment"


BOARDS = {b.name: b for b in (
    # SSC337, iComm SV6155P: OpenIPC's ssv615x-openipc package builds ssv6155.ko
    Board("imou-ranger-rc-4mp", "ssc337_lite", "ssv6155"),
    # SSC332 running SSC333 images, iComm SV6115: ssv635x-openipc builds ssv6x5x.ko
    Board("imou-ranger-rc-3mp", "ssc333_lite", "ssv6x5x"),
)}


def board(name):
    """The Board called `name`, or a CamhostError naming the known ones."""
    try:
        return BOARDS[name]
    except KeyError:
        raise CamhostError("unknown board %r: choose one of %s"
                           % (name, ", ".join(sorted(BOARDS)))) from None
