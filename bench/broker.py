"""A private mosquitto on a free loopback port, for the sections that need a broker."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

from common import Skip
from camhost import tools


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mosquitto:
    """`extra`: more mosquitto.conf lines (e.g. "set_tcp_nodelay true")."""

    def __init__(self, extra=()):
        if not tools.which("mosquitto"):
            raise Skip("mosquitto is not installed (apt-get install mosquitto)")
        self.dir = tempfile.mkdtemp(prefix="camagent-bench-broker-")
        self.port = free_port()
        conf = os.path.join(self.dir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "log_dest none\n" % self.port)
            f.write("".join(line + "\n" for line in extra))
        self.proc = subprocess.Popen([tools.which("mosquitto"), "-c", conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise Skip("mosquitto did not start on port %d" % self.port)
                time.sleep(0.02)

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
