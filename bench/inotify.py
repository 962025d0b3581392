"""Linux inotify through ctypes: wait for the next IN_MODIFY on a set of files."""
import ctypes
import ctypes.util
import os
import select
import struct
import time

IN_MODIFY = 0x00000002
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")   # wd, mask, cookie, len (then len bytes of name)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class Watcher:
    """IN_MODIFY events of some files."""

    def __init__(self):
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._paths = {}
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)

    def add(self, path):
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), IN_MODIFY)
        if wd < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch failed", path)
        self._paths[wd] = path

    def drain(self):
        """Forget the events queued so far."""
        while self._read():
            pass

    def wait_for(self, path, content, timeout_s):
        """time.perf_counter_ns() on waking for the first IN_MODIFY of `path` after which
        it holds `content` (stripped), or None after `timeout_s`.

        Checking the content skips the IN_MODIFY of an O_TRUNC open (`echo v > file`):
        on a real sysfs attribute truncation does nothing, only the write sets the pin.
        """
        deadline = time.perf_counter_ns() + int(timeout_s * 1e9)
        while True:
            left_ms = (deadline - time.perf_counter_ns()) // 1000000
            if left_ms < 0 or not self._poll.poll(left_ms):
                return None
            woke = time.perf_counter_ns()
            if any(self._paths.get(wd) == path for wd, mask in self._read()):
                with open(path, "rb") as f:
                    if f.read().strip() == content:
                        return woke

    def _read(self):
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return []
        events, pos = [], 0
        while pos + _EVENT.size <= len(data):
            wd, mask, cookie, length = _EVENT.unpack_from(data, pos)
            events.append((wd, mask))
            pos += _EVENT.size + length
        return events

    def close(self):
        os.close(self.fd)
