"""First-boot settings: what the camera needs to join the wifi and reach the broker on
its first boot, with no SSH step.

The wifi goes where OpenIPC's S40network reads it (wlandev, wlanssid, wlanpass in the
U-Boot environment, see ubootenv.py); the broker goes into /etc/camagent.json in the
rootfs. Passwords come from files (or stdin as `-`), never from the command line, and
no message, manifest or report repeats them.
"""
import argparse
import json
import re
import sys
from collections import OrderedDict, namedtuple

from .errors import CamhostError

Settings = namedtuple("Settings", "wifi_ssid wifi_password mqtt_host mqtt_port mqtt_user "
                                  "mqtt_password device_id")
SECRET_FLAGS = (("wifi_password_argv", "--wifi-password", "--wifi-password-file"),
                ("mqtt_password_argv", "--mqtt-password", "--mqtt-password-file"))
HOST = re.compile(r"^[A-Za-z0-9._:\[\]-]{1,253}$")
DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")     # becomes part of MQTT topics


class RefusedOnArgv(argparse.Action):
    """argparse action for a password flag: remembers that it was used, not its value."""

    def __init__(self, option_strings, dest, **kwargs):
        kwargs["nargs"] = "?"
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, True)


def add_arguments(p):
    """The first-boot options of `camhost image build|repack`."""
    g = p.add_argument_group("first-boot settings (the camera joins the network and the "
                             "broker on its first boot)")
    g.add_argument("--wifi-ssid", metavar="SSID", help="wifi network name (needs --backup)")
    g.add_argument("--wifi-password-file", metavar="FILE",
                   help="file holding the wifi password (- reads it from stdin)")
    g.add_argument("--mqtt-host", metavar="HOST", help="MQTT broker host name or address")
    g.add_argument("--mqtt-port", type=int, metavar="PORT", help="MQTT port (default 1883)")
    g.add_argument("--mqtt-user", metavar="USER", help="MQTT user name")
    g.add_argument("--mqtt-password-file", metavar="FILE",
                   help="file holding the MQTT password (- reads it from stdin)")
    g.add_argument("--device-id", metavar="ID",
                   help="the camera's name in MQTT topics and Home Assistant "
                        "(default: its hostname)")
    for dest, flag, instead in SECRET_FLAGS:
        g.add_argument(flag, dest=dest, action=RefusedOnArgv, metavar="PASSWORD",
                       help="refused (it would show in the process list): use %s" % instead)


def from_args(args, stdin=None):
    """Settings from parsed arguments, or None when none were given; refuses secrets on
    the command line and incomplete or invalid settings."""
    for dest, flag, instead in SECRET_FLAGS:
        if getattr(args, dest, None):
            raise CamhostError("%s is refused: a password on the command line shows in the "
                               "process list and the shell history. Put it in a file only "
                               "you can read and give %s FILE (or %s - to type it on stdin)"
                               % (flag, instead, instead))
    given = [args.wifi_ssid, args.wifi_password_file, args.mqtt_host, args.mqtt_port,
             args.mqtt_user, args.mqtt_password_file, args.device_id]
    if not any(v is not None for v in given):
        return None
    stdin = stdin if stdin is not None else sys.stdin
    if args.wifi_password_file == "-" and args.mqtt_password_file == "-":
        raise CamhostError("--wifi-password-file - and --mqtt-password-file - both read "
                           "stdin: give one of them as a file")
    if (args.wifi_ssid is None) != (args.wifi_password_file is None):
        raise CamhostError("--wifi-ssid and --wifi-password-file go together (OpenIPC's "
                           "wlan0 setup runs wpa_passphrase, which needs a password)")
    if args.mqtt_password_file is not None and args.mqtt_user is None:
        raise CamhostError("--mqtt-password-file needs --mqtt-user")
    if args.mqtt_host is None and (args.mqtt_port, args.mqtt_user) != (None, None):
        raise CamhostError("--mqtt-port and --mqtt-user need --mqtt-host")
    s = Settings(args.wifi_ssid,
                 _read_secret(args.wifi_password_file, "--wifi-password-file", stdin),
                 args.mqtt_host, args.mqtt_port, args.mqtt_user,
                 _read_secret(args.mqtt_password_file, "--mqtt-password-file", stdin),
                 args.device_id)
    check(s)
    return s


def _read_secret(path, option, stdin):
    if path is None:
        return None
    try:
        if path == "-":
            text = stdin.readline()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read(4096)
    except OSError as e:
        raise CamhostError("%s %s: %s" % (option, path, e.strerror)) from None
    except UnicodeDecodeError:
        raise CamhostError("%s %s is not UTF-8 text" % (option, path)) from None
    secret = text[:-1] if text.endswith("\n") else text
    secret = secret[:-1] if secret.endswith("\r") else secret
    if not secret:
        raise CamhostError("%s %s is empty" % (option, "(stdin)" if path == "-" else path))
    if "\n" in secret:
        raise CamhostError("%s %s holds more than one line; the password is its only line"
                           % (option, path))
    return secret


def check(s):
    """Refuse settings the camera could not use (messages never repeat a password)."""
    if s.wifi_ssid is not None:
        if not 1 <= len(s.wifi_ssid.encode("utf-8")) <= 32:
            raise CamhostError("--wifi-ssid %r is %d bytes; a wifi network name is 1 to 32"
                               % (s.wifi_ssid, len(s.wifi_ssid.encode("utf-8"))))
        pw = s.wifi_password
        hex64 = len(pw) == 64 and all(c in "0123456789abcdefABCDEF" for c in pw)
        if not hex64 and not (8 <= len(pw) <= 63 and all(" " <= c <= "~" for c in pw)):
            raise CamhostError("the wifi password in --wifi-password-file is %d characters; "
                               "WPA2 (wpa_passphrase) takes 8 to 63 printable ASCII "
                               "characters, or 64 hex digits" % len(pw))
    if s.mqtt_host is not None and (not HOST.match(s.mqtt_host)
                                    or s.mqtt_host.endswith(".invalid")):
        raise CamhostError("--mqtt-host %r is not a host name or address" % s.mqtt_host)
    if s.mqtt_port is not None and not 1 <= s.mqtt_port <= 65535:
        raise CamhostError("--mqtt-port %d is not a TCP port (1 to 65535)" % s.mqtt_port)
    if s.device_id is not None and not DEVICE_ID.match(s.device_id):
        raise CamhostError("--device-id %r: only ASCII letters, digits, - and _ (1 to 64; "
                           "it becomes part of MQTT topics)" % s.device_id)


def env_changes(s, board):
    """{U-Boot variable: value} for the wifi, or {} without wifi settings."""
    if s is None or s.wifi_ssid is None:
        return {}
    # the environment holds bytes (ubootenv writes Latin-1 text); wpa_supplicant compares
    # the SSID's UTF-8 bytes, so a non-ASCII name is stored as those bytes
    return OrderedDict((("wlandev", board.wlandev),
                        ("wlanssid", s.wifi_ssid.encode("utf-8").decode("latin-1")),
                        ("wlanpass", s.wifi_password)))


def agent_config(text, s):
    """The /etc/camagent.json text `text` with the broker and device settings applied."""
    if s is None or (s.mqtt_host is None and s.device_id is None):
        return text
    config = json.loads(text, object_pairs_hook=OrderedDict)
    mqtt = config.setdefault("mqtt", OrderedDict())
    for key, value in (("host", s.mqtt_host), ("port", s.mqtt_port),
                       ("username", s.mqtt_user), ("password", s.mqtt_password)):
        if value is not None:
            mqtt[key] = value
    if s.device_id is not None:
        config["device_id"] = s.device_id
    return json.dumps(config, indent=4) + "\n"


def summary(s, board):
    """What the image carries, for the manifest and the report: passwords masked."""
    if s is None:
        return None
    out = OrderedDict()
    if s.wifi_ssid is not None:
        out["env"] = OrderedDict((("wlandev", board.wlandev), ("wlanssid", s.wifi_ssid),
                                  ("wlanpass", "(set, not shown)")))
    if s.mqtt_host is not None or s.device_id is not None:
        config = OrderedDict()
        for key, value in (("mqtt.host", s.mqtt_host), ("mqtt.port", s.mqtt_port),
                           ("mqtt.username", s.mqtt_user), ("device_id", s.device_id)):
            if value is not None:
                config[key] = value
        if s.mqtt_password is not None:
            config["mqtt.password"] = "(set, not shown)"
        out["/etc/camagent.json"] = config
    return out
