"""`micropython -m camagent -c FILE`: load the config, build the camera, run the loop."""
import sys

from . import VERSION
from .camera import Camera, NoDeviceLeft
from .compat import install_term_handler
from .config import DEFAULT_PATH, ConfigError, load
from .gpio import GpioError

USAGE = """usage: camagent [-c FILE] [--version]
  -c FILE    config file (default %s)""" % DEFAULT_PATH


def _say(message):
    try:
        print("camagent: " + message, file=sys.stderr)
    except BaseException:
        pass        # no heap, or no stderr: the message is the one thing to lose


def _fail(message, code):
    _say(message)
    return code


def main(argv):
    path = DEFAULT_PATH
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-c", "--config") and args:
            path = args.pop(0)
        elif arg == "--version":
            print("camagent " + VERSION)
            return 0
        elif arg in ("-h", "--help"):
            print(USAGE)
            return 0
        else:
            return _fail("unexpected argument %r\n%s" % (arg, USAGE), 2)
    try:
        cfg = load(path)
    except ConfigError as e:
        return _fail(str(e), 2)
    install_term_handler()
    try:
        camera = Camera(cfg)
    except (GpioError, OSError, NoDeviceLeft) as e:
        return _fail("cannot set up the hardware: %s" % e, 1)
    session = None
    code = 0
    try:
        camera.start()
        if cfg["mqtt"]["host"]:
            from .mqtt import Session
            session = Session(camera, cfg)
        if cfg["local_port"]:
            from .localchan import start
            camera.channel = start(camera, cfg, session)
        camera.run()
    except KeyboardInterrupt:
        pass
    except (NoDeviceLeft, GpioError) as e:
        # one failing line takes out only its device (Camera.fault): with none left, or a
        # GpioError the camera did not take (not a line of its own), there is no agent
        code = _fail("hardware failure, stopping: %s" % e, 1)
        if session is not None:
            session.publish_now()   # the last fault and the state, before going offline
    finally:
        if camera.channel is not None:
            try:
                camera.channel.close()
            except Exception as e:
                _say("cannot close the local channel: %r" % (e,))
        if session is not None:
            try:
                session.close()
            except BaseException as e:
                # anything, even MemoryError "heap is locked" after a broken read: the
                # coils below must still go low and the pins be released
                _say("cannot close the MQTT session: %r" % (e,))
        try:
            camera.close()
        except GpioError as e:
            # a line could not be written low: say which, not a traceback
            code = _fail("cannot release the hardware, check it: %s" % e, 1)
    return code
