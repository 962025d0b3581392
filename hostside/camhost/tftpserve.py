"""Serve a directory over TFTP (read-only) from a background thread, using tftpy.

U-Boot fetches the partition files from here. The standard port, 69, is privileged:
binding it needs root (or CAP_NET_BIND_SERVICE). A U-Boot built with CONFIG_TFTP_PORT
reads the server port from its `tftpdstp` variable, so a high port works with it.
"""
import errno
import logging
import os
import sys
import threading

import tftpy

from .errors import CamhostError

TFTP_PORT = 69
# tftpy retransmits after this many seconds of silence; stop() also waits up to this long
RESEND_SECONDS = 0.5
RESENDS = 10


class TftpServer:
    """`with TftpServer(root, "192.168.1.10") as server:` serves `root` until the block ends."""

    def __init__(self, root, address, port=TFTP_PORT):
        self.root = root
        self.address = address
        self.requested_port = port
        self._server = None
        self._thread = None
        self._error = None

    @property
    def port(self):
        return self._server.listenport

    def start(self):
        # our own messages report transfer problems; tftpy's log lines would interleave
        logging.getLogger("tftpy").setLevel(logging.CRITICAL)
        self._server = tftpy.TftpServer(self.root, upload_open=lambda path, context: None)
        self._thread = threading.Thread(target=self._serve, name="tftp-server", daemon=True)
        self._thread.start()
        while not self._server.is_running.wait(0.02):
            if not self._thread.is_alive():
                raise self._explain(self._error)
        return self

    def stop(self):
        if self._thread and self._thread.is_alive():
            self._server.stop(now=True)
            self._thread.join(RESEND_SECONDS * 4)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _serve(self):
        try:
            self._server.listen(self.address, self.requested_port, timeout=RESEND_SECONDS,
                                retries=RESENDS)
        except Exception as e:  # reported by start() or, once running, lost with the thread
            self._error = e

    def _explain(self, error):
        where = "UDP port %d on %s" % (self.requested_port, self.address)
        code = getattr(error, "errno", None)
        if code in (errno.EACCES, errno.EPERM):
            return CamhostError(
                "binding %s needs root: TFTP's standard port is privileged. Run as root "
                "(sudo), or allow this Python to bind it (`sudo setcap "
                "cap_net_bind_service=+ep %s`, for every user of that binary), or use "
                "--tftp-port with a port above 1023 if the camera's U-Boot honours "
                "`tftpdstp` (see the README)." % (where, os.path.realpath(sys.executable)))
        if code == errno.EADDRNOTAVAIL:
            return CamhostError(
                "%s is not an address of this computer: --server-ip must be this computer's "
                "address on the camera's network (see `ip addr`)." % self.address)
        if code == errno.EADDRINUSE:
            return CamhostError(
                "%s is already in use (another TFTP server such as tftpd-hpa?). Stop it, "
                "or choose another --tftp-port." % where)
        return CamhostError("cannot start the TFTP server on %s: %s" % (where, error))
