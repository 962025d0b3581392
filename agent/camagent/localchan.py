"""The local channel: majestic's motion.sh and the ONVIF PTZ hook reach the agent.

A TCP listener on 127.0.0.1 only (OpenIPC's busybox nc speaks TCP, not UDP or
unix sockets; a FIFO could not answer get_position). One request per
connection: a line of at most MAX_LINE bytes, a known verb and the number of
words it takes, answered with "ok" (and data lines) or "error <reason>", then the
connection is closed. Nothing here runs a shell; every socket is non-blocking
and a silent client is dropped after _CLIENT_TIMEOUT_US, so the step loop never
waits on the channel.
"""
import errno
import sys

from .compat import const, reason, ticks_add, ticks_diff

MAX_LINE = const(128)
MAX_CLIENTS = const(4)  # open requests at once; more wait in the listen backlog
_ACCEPTS_PER_WAKEUP = const(4)  # a flood of connections must not starve the motors
_CLIENT_TIMEOUT_US = const(2000000)

# verb -> (fewest, most) arguments
VERBS = {
    "motion": (0, 0),
    "move_left": (0, 1), "move_right": (0, 1), "move_up": (0, 1), "move_down": (0, 1),
    "move_stop": (0, 1), "goto_home_position": (0, 0), "set_home_position": (0, 0),
    "get_position": (0, 0), "is_moving": (0, 0), "get_presets": (0, 0),
    "jump_to_abs": (2, 3), "jump_to_rel": (2, 3),
    "move_preset": (1, 1), "remove_preset": (1, 1), "set_preset": (1, 2),
}


class LineError(Exception):
    pass


def parse_line(line):
    """(verb, [words]) from one received line (bytes, newline optional)."""
    if len(line) > MAX_LINE:
        raise LineError("line too long")
    for b in line:
        if (b < 32 and b not in (9, 10, 13)) or b > 126:
            raise LineError("line is not text")
    words = line.decode().split()
    if not words:
        raise LineError("empty line")
    verb = words[0]
    want = VERBS.get(verb)
    if want is None:
        raise LineError("unknown command " + verb[:32])
    if not want[0] <= len(words) - 1 <= want[1]:
        raise LineError(verb + " takes " + ("%d" % want[0] if want[0] == want[1]
                                            else "%d to %d" % want) + " argument(s)")
    return verb, words[1:]


class Channel:
    """The listener and its open requests: a device on the camera's loop.

    `handler(verb, args)` runs a parsed request and returns its data lines ("" for
    none); any exception it raises becomes the "error" reply.
    """

    def __init__(self, loop, port, handler):
        self.loop = loop
        self.handler = handler
        self.clients = []      # [socket, received bytes, deadline]
        self.due = None        # the nearest client deadline
        self.served = 0        # requests answered "ok", for tests and the bench
        self.failed = 0        # requests answered "error"
        self.error = None      # why there is no listener: reported in the state's problems
        self.sock = None
        import socket   # here: the parser above also runs where there are no sockets
        s = socket.socket()   # TCP over IPv4
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(socket.getaddrinfo("127.0.0.1", port)[0][-1])
            s.listen(MAX_CLIENTS)
            s.setblocking(False)
        except OSError as e:
            s.close()
            # the errno in words (compat's table has no EADDRINUSE: not a file error)
            why = "address in use" if errno.EADDRINUSE in e.args else reason(e)
            self.error = ("local channel: cannot listen on 127.0.0.1:%d (%s); motion and "
                          "ONVIF PTZ are off" % (port, why))
            print("camagent: " + self.error, file=sys.stderr)
            return
        self.sock = s
        loop.watch(s, self._accept)
        loop.add(self)

    def _accept(self):
        now = self.loop.clock()
        for _ in range(_ACCEPTS_PER_WAKEUP):
            if len(self.clients) >= MAX_CLIENTS:
                # full: later clients wait in the kernel's backlog, and the listener
                # is not watched until a slot frees (it would wake the loop for nothing)
                self.loop.unwatch(self.sock)
                break
            try:
                conn = self.sock.accept()[0]
            except OSError:
                break           # nothing (more) waiting
            conn.setblocking(False)
            client = [conn, b"", ticks_add(now, _CLIENT_TIMEOUT_US)]
            self.clients.append(client)
            self._watch(client)
        self._schedule()

    def _watch(self, client):
        self.loop.watch(client[0], lambda: self._read(client))

    def _read(self, client):
        try:
            data = client[0].recv(MAX_LINE + 1 - len(client[1]))
        except OSError as e:
            if errno.EAGAIN in e.args:
                return          # nothing there yet
            data = b""          # reset by the peer: answer what came, if anything
        buf = client[1] + data
        client[1] = buf
        end = buf.find(b"\n")
        if end < 0 and data and len(buf) <= MAX_LINE:
            return              # the rest of the line is still on its way
        if end < 0 and not buf:
            self._drop(client, None)   # closed without a word
            return
        self._drop(client, self._answer(buf if end < 0 else buf[:end]))

    def _answer(self, line):
        try:
            verb, args = parse_line(line)
            data = self.handler(verb, args)
        except Exception as e:  # the reply says why; the agent carries on
            self.failed += 1
            return ("error %s\n" % (e,)).encode()
        self.served += 1
        return ("ok\n" + data + "\n" if data else "ok\n").encode()

    def _drop(self, client, reply):
        self.loop.unwatch(client[0])
        if client in self.clients:
            self.clients.remove(client)
        if reply is None:
            client[0].close()
        else:
            _send_close(client[0], reply)
        if self.sock is not None:   # a slot is free: watched again if it was full
            self.loop.watch(self.sock, self._accept)
        self._schedule()

    def tick(self, now):
        for client in list(self.clients):
            if ticks_diff(now, client[2]) >= 0:
                self.failed += 1
                self._drop(client, ("error no complete line within %d s\n"
                                    % (_CLIENT_TIMEOUT_US // 1000000)).encode())
        self._schedule()

    def _schedule(self):
        due = None
        for client in self.clients:
            if due is None or ticks_diff(client[2], due) < 0:
                due = client[2]
        self.due = due

    def close(self):
        for client in list(self.clients):
            self._drop(client, None)
        if self.sock is not None:
            self.loop.unwatch(self.sock)   # (also when paused: unwatch is idempotent)
            self.sock.close()
            self.sock = None
        self.loop.remove(self)


def _send_close(conn, reply):
    try:
        conn.send(reply)        # a few hundred bytes: loopback takes them at once
        # what is left unread of an over-long line would turn the close into a reset
        # that can overtake the reply: read (a bounded amount of) it first
        conn.recv(4 * MAX_LINE)
    except OSError:
        pass                    # the client gave up, or sent nothing more
    conn.close()


def start(camera, cfg, session):
    """The channel on cfg["local_port"], answering motion (with a session) and ONVIF PTZ."""
    motion = None
    if session is not None:
        from .motion import Motion
        motion = Motion(session, cfg["motion"])
        commands = session.commands
        after = session.after_command
    else:
        from .commands import Commands
        from .presets import Presets
        commands = Commands(camera, Presets(camera.state_dir + "/presets.json"),
                            cfg["mqtt"]["move_increment_deg"])
        after = camera.changed
    ptz = None   # the ONVIF verbs, loaded at the first PTZ request (lite images have no ONVIF)

    def handle(verb, args):
        nonlocal ptz
        if verb == "motion":
            if motion is None:
                raise ValueError("motion needs MQTT (mqtt.host is empty)")
            motion.detected()
            return ""
        if ptz is None:
            from .onvif import OnvifPtz
            ptz = OnvifPtz(camera, commands)
        data = ptz.run(verb, args)
        if ptz.changed:
            after()
        return data

    return Channel(camera.loop, cfg["local_port"], handle)
