"""Camera bridges: what camhost's parsing and the MQTT bridge add to each exchange.

Against the simulators on loopback and a private mosquitto:
  - a ToupCam snap (connect, request, the reply's layers parsed, SOI/EOI checked) beside
    a plain TCP read of the same reply bytes to EOF;
  - snap/take through `camhost toupcam bridge` until the JPEG arrives on snap/image,
    beside the same JPEG published by a plain paho client (the broker's own cost);
  - still/take through `camhost actioncam bridge` until the state counts it, beside the
    same still taken directly on an ActionCam session.
Every figure is a median of `repeats` runs, measured with its baseline in this run.
"""
import json
import os
import socket
import statistics
import tempfile
import threading
import time
import uuid

import common  # noqa: F401  (import paths)
from broker import Mosquitto
from table import figure, section

import paho.mqtt.client as mqtt

from camhost import toupcam
from camhost import toupcam_wire as wire
from camhost.actioncam import ActionCam
from camhost.actioncam_bridge import ActionCamBridge
from camhost.bridge import Bridge, _no_delay
from camhost.simactioncam import SimActionCam
from camhost.simtoupcam import SimToupCam, make_test_jpeg
from camhost.toupcam_bridge import ToupCamBridge

WAIT_S = 20


class Listener:
    """A paho client that keeps the arrival time of each message per topic."""

    def __init__(self, port, topics):
        self.cond = threading.Condition()
        self.got = []          # (monotonic, topic, payload)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id="bench-" + uuid.uuid4().hex[:8])
        ready = threading.Event()
        self.client.on_socket_open = _no_delay   # a fair client: see camhost.bridge
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe([(t, 1) for t in topics])
        if not ready.wait(WAIT_S):
            raise common.Skip("the bench's MQTT client could not subscribe")

    def _on_message(self, client, userdata, msg):
        with self.cond:
            self.got.append((time.monotonic(), msg.topic, msg.payload))
            self.cond.notify_all()

    def wait(self, start, predicate):
        """Arrival time of the first message from index `start` with predicate(topic, payload)."""
        end = time.monotonic() + WAIT_S
        with self.cond:
            while True:
                for at, topic, payload in self.got[start:]:
                    if predicate(topic, payload):
                        return at
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def mark(self):
        with self.cond:
            return len(self.got)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def _ms(samples):
    return 1000 * statistics.median(samples) if samples else None


def _plain_read(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as s:
        s.sendall(request)
        n = 0
        while True:
            block = s.recv(1 << 20)
            if not block:
                return n
            n += len(block)


def _toupcam(broker, jpeg, repeats, raw):
    listen = _free_udp()
    with SimToupCam(jpeg, report_to=[("127.0.0.1", listen)], report_interval_s=0.5) as sim:
        parsed, plain = [], []
        for _ in range(repeats):
            t0 = time.monotonic()
            got = toupcam.snap("127.0.0.1", sim.snap_port)
            parsed.append(time.monotonic() - t0)
            t0 = time.monotonic()
            n = _plain_read(sim.snap_port, wire.DEFAULT_REQUEST)
            plain.append(time.monotonic() - t0)
        raw["snap"] = {"identical": got.jpeg == jpeg, "reply_bytes": n, "n": repeats}

        controls = toupcam.Controls("127.0.0.1", sim.control_port, listen, "127.0.0.1")
        bridge = Bridge("mqtt://127.0.0.1:%d" % broker.port, "bench-tc", {"model": "bench"},
                        log=lambda msg: None)
        tb = ToupCamBridge(bridge, controls, dict(toupcam.REGISTERS), sim.snap_port,
                           decode=False)
        listener = Listener(broker.port, ["camagent/bench-tc/snap/image", "bench/plain"])
        bridged, direct, lost = [], [], 0
        try:
            bridge.connect()
            tb.start()
            thread = threading.Thread(target=bridge.run_forever, args=(tb.poll, 1.0, tb.publish),
                                      daemon=True)
            thread.start()
            for _ in range(repeats):
                start = listener.mark()
                t0 = time.monotonic()
                listener.client.publish("camagent/bench-tc/snap/take", b"TAKE", qos=1)
                at = listener.wait(start, lambda t, p: t.endswith("/snap/image") and p == jpeg)
                if at is None:
                    lost += 1
                else:
                    bridged.append(at - t0)
                start = listener.mark()
                t0 = time.monotonic()
                listener.client.publish("bench/plain", jpeg, qos=1)
                at = listener.wait(start, lambda t, p: t == "bench/plain")
                if at is not None:
                    direct.append(at - t0)
            bridge.close()
            thread.join(WAIT_S)
        finally:
            listener.close()
            tb.stop()
            controls.close()
        raw["snap_take"] = {"n": repeats, "lost": lost}
    return parsed, plain, bridged, direct


def _actioncam(broker, repeats, raw, nodelay=True):
    with SimActionCam(alive_interval_s=1.0) as sim:
        with ActionCam("127.0.0.1", sim.control_port, timeout=5) as cam:
            direct = []
            for _ in range(repeats):
                t0 = time.monotonic()
                cam.still()
                direct.append(time.monotonic() - t0)
        cam = ActionCam("127.0.0.1", sim.control_port, timeout=5)
        bridge = Bridge("mqtt://127.0.0.1:%d" % broker.port, "bench-ac", {"model": "bench"},
                        log=lambda msg: None)
        ab = ActionCamBridge(cam, bridge)
        if not nodelay:
            bridge.client.on_socket_open = None      # paho's default: Nagle on
        listener = Listener(broker.port, ["camagent/bench-ac/state"])
        bridged, lost = [], 0
        try:
            bridge.connect()
            thread = threading.Thread(target=bridge.run_forever, args=(ab.poll, 5.0, ab.publish),
                                      daemon=True)
            thread.start()
            listener.wait(0, lambda t, p: json.loads(p)["firmware"])
            for n in range(repeats):
                start = listener.mark()
                t0 = time.monotonic()
                listener.client.publish("camagent/bench-ac/still/take", b"TAKE", qos=1)
                at = listener.wait(start, lambda t, p, n=n: json.loads(p)["stills"] == n + 1)
                if at is None:
                    lost += 1
                else:
                    bridged.append(at - t0)
            bridge.close()
            thread.join(WAIT_S)
        finally:
            listener.close()
            cam.close()
        raw["still_take" if nodelay else "still_take_nagle"] = {
            "n": repeats, "lost": lost, "camera_stills": sim.stills}
    return bridged, direct


def _free_udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(repeats=20, size="1920x1080"):
    import shutil
    if not shutil.which("ffmpeg"):
        raise common.Skip("ffmpeg is not installed (it makes the test JPEG)")
    work = tempfile.mkdtemp(prefix="camagent-bench-bridges-")
    jpeg = make_test_jpeg(os.path.join(work, "t.jpg"), size)
    raw = {"jpeg_bytes": len(jpeg)}
    # the broker's own Nagle would add its delayed-ACK wait to every bridged figure
    with Mosquitto(extra=["set_tcp_nodelay true"]) as broker:
        parsed, plain, bridged, direct = _toupcam(broker, jpeg, repeats, raw)
        still_bridged, still_direct = _actioncam(broker, repeats, raw)
        still_nagle, _ = _actioncam(broker, repeats, raw, nodelay=False)
    kib = len(jpeg) // 1024
    figures = [
        figure("ToupCam snap, %s JPEG of %d KiB" % (size, kib), _ms(parsed), "ms", _ms(plain),
               "plain TCP read of the same reply"),
        figure("ToupCam snap/take to snap/image on MQTT", _ms(bridged), "ms",
               _ms(direct), "the same JPEG published by paho"),
        figure("action camera still/take to state on MQTT", _ms(still_bridged), "ms",
               _ms(still_direct), "the same still on an ActionCam session"),
        figure("still/take to state, TCP_NODELAY on the bridge", _ms(still_bridged), "ms",
               _ms(still_nagle), "paho's default (Nagle)"),
    ]
    notes = ["medians of %d runs on loopback, mosquitto with set_tcp_nodelay true (its "
             "default adds a delayed-ACK wait of about 40 ms to each bridged figure); the "
             "bridge figures include the snap or still itself, their baselines do not"
             % repeats]
    return section("Camera bridges", figures, notes), raw


if __name__ == "__main__":
    sec, raw = run()
    print(json.dumps({"section": sec, "raw": raw}, indent=1, default=str))
