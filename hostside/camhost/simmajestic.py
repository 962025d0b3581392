"""A simulated majestic (OpenIPC's streamer) for `camhost demo`, the tests and the bench.

HTTP/1.0 on a free loopback port, with the endpoints the agent uses:
  /image.jpg       a real JPEG made by ffmpeg (`?width=&height=&qfactor=` accepted;
                   each size is made once and kept)
  /metrics/isp     Prometheus text whose `isp_again` is whatever `gain` is set to
  /night/on|off|toggle   recorded in `night_calls`; answers 1 or 0 like majestic
  /api/v1/set?k=v  recorded in `settings`; /api/v1/config answers them as JSON
With `login` set to (user, password), every path needs that HTTP Basic login (401).
Faults, set with fault(mode, path=None) for one path or all: "down" (nothing
listens on the port), "slow" (the answer trickles out), "garbage" (not HTTP),
"no_length" (no Content-Length), "short" (the body stops half-way).
Only majestic is simulated: the agent talking to it is the real one.
"""
import base64
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from urllib.parse import parse_qs, urlsplit

FAULTS = ("down", "slow", "garbage", "no_length", "short")
SLOW_PIECE = 64          # bytes per trickle
SLOW_GAP_S = 0.05        # between trickles: a 10 KB image takes ~8 s


def make_jpeg(width=640, height=360, qfactor=75, noise=False):
    """A real JPEG from ffmpeg's test pattern (noise=True: incompressible, for big ones)."""
    # qfactor 1..100 (majestic's) to ffmpeg's mjpeg quantiser 2 (best)..31
    q = max(2, min(31, int(round(31 - (qfactor / 100.0) * 29))))
    if noise:
        src = "nullsrc=s=%dx%d,geq=random(1)*255:128:128" % (width, height)
    else:
        src = "testsrc=size=%dx%d:rate=1" % (width, height)
    fd, path = tempfile.mkstemp(suffix=".jpg")
    os.close(fd)
    try:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
                        "-i", src, "-frames:v", "1", "-q:v", str(q), path],
                       check=True, timeout=60)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


class SimMajestic:
    def __init__(self, port=0, gain=1000.0, image=None):
        self.gain = gain
        self.night_calls = []        # "on", "off", "toggle", in call order
        self.night = False
        self.settings = {}
        self.requests = []           # every path asked for, with its query
        self.login = None            # (user, password) the answers require
        self._images = {}
        if image is not None:
            self._images[None] = image
        self._faults = {}            # path (None: all) -> mode
        self._lock = threading.Lock()
        self._listener = None
        self._thread = None
        self._stopping = False
        self.port = port
        self._listen()

    # --- what tests set and read ------------------------------------------------------
    def image(self, width=None, height=None, qfactor=None):
        """The JPEG /image.jpg serves for these parameters (made on first use)."""
        key = None if width is height is qfactor is None else (width, height, qfactor)
        with self._lock:
            data = self._images.get(key)
        if data is None:
            data = make_jpeg(width or 640, height or 360, qfactor or 75)
            with self._lock:
                self._images[key] = data
        return data

    def set_image(self, data):
        """Serve these bytes for /image.jpg without parameters."""
        with self._lock:
            self._images[None] = data

    def fault(self, mode, path=None):
        """Misbehave on `path` (None: every path); mode None heals it."""
        if mode is not None and mode not in FAULTS:
            raise ValueError("fault must be one of %s" % ", ".join(FAULTS))
        with self._lock:
            if mode is None:
                self._faults.pop(path, None)
            else:
                self._faults[path] = mode
            down = "down" in self._faults.values()
        if down and self._listener is not None:
            self._close_listener()
        elif not down and self._listener is None:
            self._listen()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def close(self):
        self._stopping = True
        self._close_listener()

    # --- serving ----------------------------------------------------------------------
    def _listen(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self.port = s.getsockname()[1]
        self._listener = s
        self._thread = threading.Thread(target=self._accept, args=(s,), daemon=True,
                                        name="simmajestic")
        self._thread.start()

    def _close_listener(self):
        s, self._listener = self._listener, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _accept(self, listener):
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return   # closed: "down", or the end
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 4096:
                piece = conn.recv(1024)
                if not piece:
                    return
                head += piece
            line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(line) < 2 or line[0] != "GET":
                self._send(conn, None, 400, b"bad request\n", "text/plain")
                return
            url = urlsplit(line[1])
            with self._lock:
                self.requests.append(line[1])
                mode = self._faults.get(url.path, self._faults.get(None))
            if self.login and not self._authorised(head):
                self._send(conn, mode, 401, b"login required\n", "text/plain")
                return
            status, body, ctype = self._answer(url.path, parse_qs(url.query))
            self._send(conn, mode, status, body, ctype)
        except OSError:
            pass   # the agent went away mid-answer: nothing to tell it
        finally:
            conn.close()

    def _authorised(self, head):
        token = base64.b64encode(("%s:%s" % self.login).encode())
        return b"\r\nauthorization: basic " + token.lower() in head.lower()

    def _answer(self, path, query):
        def number(name):
            try:
                return int(query[name][0])
            except (KeyError, ValueError):
                return None
        if path == "/image.jpg":
            return 200, self.image(number("width"), number("height"), number("qfactor")), \
                "image/jpeg"
        if path == "/metrics/isp":
            text = ("# HELP isp_again Analog gain\n# TYPE isp_again gauge\n"
                    "isp_again %s\nisp_dgain 1024\nisp_exposure 10000\n" % _num(self.gain))
            return 200, text.encode(), "text/plain; version=0.0.4"
        if path in ("/night/on", "/night/off", "/night/toggle"):
            word = path.rsplit("/", 1)[1]
            with self._lock:
                self.night_calls.append(word)
                self.night = {"on": True, "off": False}.get(word, not self.night)
            return 200, b"1" if self.night else b"0", "text/plain"
        if path == "/api/v1/set":
            with self._lock:
                for key, values in query.items():
                    self.settings[key] = values[0]
            return 200, b"{}", "application/json"
        if path == "/api/v1/config":
            return 200, json.dumps(self.settings).encode(), "application/json"
        return 404, b"not found\n", "text/plain"

    def _send(self, conn, mode, status, body, ctype):
        if mode == "garbage":
            conn.sendall(b"\x00\xffSPROING this is not an HTTP answer\r\n\r\n" + os.urandom(64))
            return
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized",
                  404: "Not Found"}.get(status, "Error")
        head = "HTTP/1.0 %d %s\r\nContent-Type: %s\r\n" % (status, reason, ctype)
        if mode != "no_length":
            head += "Content-Length: %d\r\n" % len(body)
        data = head.encode() + b"Connection: close\r\n\r\n" + body
        if mode == "short":
            conn.sendall(data[:len(data) - max(1, len(body) // 2)])
        elif mode == "slow":
            for i in range(0, len(data), SLOW_PIECE):
                if self._stopping:
                    return
                conn.sendall(data[i:i + SLOW_PIECE])
                time.sleep(SLOW_GAP_S)
        else:
            conn.sendall(data)


def _num(x):
    return ("%d" % x) if float(x) == int(x) else repr(float(x))
