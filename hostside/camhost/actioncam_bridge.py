"""`camhost actioncam bridge`: an action camera on MQTT and in Home Assistant.

The MQTT side is camhost.bridge; this module is the camera side. Every poll asks the
camera for its firmware (once) and its file list: an answer means `online`, a failure
`offline` with the reason in the state's `problems`, and the next poll connects and
logs in again by itself. Commands:

  still/take   TAKE (or PRESS, HA's default)      take a still
  record/set   ON | OFF                           start / stop recording

The protocol has no question for "are you recording?", so `recording` is what the
bridge last commanded (null until then). With --rtsp-port the preview relay of `serve`
runs in the same process on the same control session (the camera takes one control
client at a time, so a separate `serve` would keep throwing the bridge off).
"""
import datetime
import threading

from .actioncam import CameraError, PreviewRelay, RtspServer
from .bridge import Bridge, BridgeError
from .errors import CamhostError

MODEL = "wifi action camera (phone-app protocol)"


def _word(payload, accepted, topic):
    word = payload.strip().upper().decode("ascii", "replace")
    if word not in accepted:
        raise BridgeError("%s takes %s" % (topic, " or ".join(accepted)))
    return word


class ActionCamBridge:
    def __init__(self, cam, bridge, rtsp_url=None):
        self.cam = cam
        self.bridge = bridge
        self.rtsp_url = rtsp_url
        self.firmware = None
        self.files = None
        self.recording = None
        self.stills = 0
        self.last_still = None
        self.problem = "not polled yet"
        bridge.add_command("still/take", self.take_still)
        bridge.add_command("record/set", self.set_recording)
        self._entities()

    def _entities(self):
        add = self.bridge.add_entity
        add("button", "still", {"name": "Take still", "command_topic": "~/still/take",
                                "payload_press": "TAKE", "icon": "mdi:camera"})
        add("switch", "recording", {"name": "Recording", "command_topic": "~/record/set",
                                    "state_topic": "~/state",
                                    "value_template": "{{ 'ON' if value_json.recording "
                                                      "else 'OFF' }}",
                                    "payload_on": "ON", "payload_off": "OFF",
                                    "icon": "mdi:record-rec"})
        add("sensor", "files", {"name": "Files on the card", "state_topic": "~/state",
                                "value_template": "{{ value_json.files }}",
                                "state_class": "measurement", "icon": "mdi:filmstrip-box"})
        add("sensor", "last_still", {"name": "Last still", "state_topic": "~/state",
                                     "value_template": "{{ value_json.last_still }}",
                                     "device_class": "timestamp"})
        add("sensor", "firmware", {"name": "Firmware", "state_topic": "~/state",
                                   "value_template": "{{ value_json.firmware }}",
                                   "entity_category": "diagnostic"})
        if self.rtsp_url:
            add("sensor", "rtsp_url", {"name": "RTSP stream", "state_topic": "~/state",
                                       "value_template": "{{ value_json.rtsp_url }}",
                                       "icon": "mdi:video"})

    # --- the camera side --------------------------------------------------------------
    def poll(self):
        try:
            if self.firmware is None or not self.cam.connected:
                self.firmware = self.cam.firmware()
                self.bridge.update_device(sw_version=self.firmware)
            self.files = len(self.cam.files())
        except CamhostError as e:        # CameraError, or an answer that does not parse
            self._gone("the camera at %s:%d does not answer: %s"
                       % (self.cam.host, self.cam.port, e))
        else:
            if self.problem:
                self.bridge.log("the camera answers at %s:%d" % (self.cam.host, self.cam.port))
            self.problem = None
            self.bridge.set_available(True)
        self.publish()

    def _gone(self, why):
        if why != self.problem:
            self.bridge.log(why)
        self.problem = why
        self.cam.close()
        self.bridge.set_available(False)

    def state(self):
        return {"recording": self.recording, "firmware": self.firmware, "files": self.files,
                "stills": self.stills, "last_still": self.last_still,
                "rtsp_url": self.rtsp_url, "camera": "%s:%d" % (self.cam.host, self.cam.port),
                "problems": [self.problem] if self.problem else [],
                "commands": self.bridge.command_counts()}

    def publish(self):
        self.bridge.publish_state(self.state())

    def _online(self, topic):
        if not self.bridge.available:
            raise BridgeError("the camera is offline (%s); %s waits for availability "
                              "online" % (self.problem, topic))

    # --- commands -------------------------------------------------------------------
    def take_still(self, payload):
        _word(payload, ("TAKE", "PRESS"), "still/take")
        self._online("still/take")
        self._camera(self.cam.still)
        self.stills += 1
        self.last_still = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds")

    def set_recording(self, payload):
        on = _word(payload, ("ON", "OFF"), "record/set") == "ON"
        self._online("record/set")
        self._camera(self.cam.record, on)
        self.recording = on

    def _camera(self, call, *args):
        try:
            call(*args)
        except CameraError as e:
            if not self.cam.connected:
                self._gone("the camera at %s:%d went away: %s" % (self.cam.host, self.cam.port, e))
            raise


def run(args, cam):
    """The CLI's `bridge`: until SIGINT/SIGTERM; the caller closes `cam`."""
    import signal
    rtsp = relay = None
    rtsp_url = args.rtsp_url
    if args.rtsp_port is not None:
        rtsp = RtspServer(args.rtsp_host, args.rtsp_port, mtu=args.mtu)
        rtsp_url = rtsp_url or rtsp.url
        relay = PreviewRelay(cam, rtsp, preview_port=args.preview_port)
    device_id = args.device_id or "actioncam-" + args.host.replace(".", "-").replace(":", "-")
    bridge = Bridge(args.broker, device_id, {"model": MODEL, "manufacturer": "generic"},
                    prefix=args.prefix, discovery_prefix=args.discovery_prefix)
    ab = ActionCamBridge(cam, bridge, rtsp_url)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *a: bridge.stop())
    bridge.connect()
    print("bridging %s:%d as %s on %s" % (cam.host, cam.port, bridge.base, bridge.broker),
          flush=True)
    if relay:
        threading.Thread(target=relay.run, daemon=True).start()
    try:
        bridge.run_forever(ab.poll, args.poll, after_command=ab.publish)
    except KeyboardInterrupt:
        pass
    finally:
        bridge.close()
        if relay:
            relay.stop()
        if rtsp:
            rtsp.close()
    return 0
