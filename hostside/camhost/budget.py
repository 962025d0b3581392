"""The flash budget: what an image adds and drops, and what is left per partition.

A `Budget` collects changes (each with its file bytes and the bytes it takes in the
squashfs, measured by squashing just those files with the image's own compression)
and the partitions' final contents, then prints the table and refuses an image that
does not fit, naming the partition, the overflow and what could make room.
"""
import textwrap
from collections import namedtuple

from . import layout
from .errors import CamhostError

# sign is +1 (added) or -1 (removed); squashed is None when not measured
Change = namedtuple("Change", "sign label files raw squashed note")
Use = namedtuple("Use", "partition used source")
# Bytes a partition must keep free: the rootfs keeps room for an agent update in place
# and for what a later release adds, so "fits" never means "fits by a few bytes".
SPARE = {"rootfs": 32 * 1024}


def fmt(n):
    return "{:,}".format(n)


class Budget:
    def __init__(self, title):
        self.title = title
        self.changes = []
        self.uses = {}
        self.rootfs_before = None   # bytes of the rootfs we started from, if any
        self.suggestions = []       # (label, squashed bytes, what it costs the user)

    def add(self, label, files, raw, squashed, note=""):
        self.changes.append(Change(1, label, files, raw, squashed, note))

    def remove(self, label, files, raw, squashed, note=""):
        self.changes.append(Change(-1, label, files, raw, squashed, note))

    def use(self, name, used, source):
        """Partition `name` holds `used` bytes of content from `source`."""
        self.uses[name] = Use(layout.partition(name), used, source)

    def suggest(self, label, squashed, loses):
        self.suggestions.append((label, squashed, loses))

    def net_added(self):
        return sum(c.sign * c.squashed for c in self.changes if c.squashed is not None)

    def overflows(self):
        """[(Partition, bytes over)] for every partition whose content does not fit with
        its SPARE bytes free."""
        return [(u.partition, u.used + SPARE.get(u.partition.name, 0) - u.partition.size)
                for u in self.uses.values()
                if u.used + SPARE.get(u.partition.name, 0) > u.partition.size]

    def as_dict(self):
        """The changes and partitions, for the manifest."""
        return {
            "changes": [{"change": "added" if c.sign > 0 else "removed", "what": c.label,
                         "files": c.files, "bytes": c.raw, "squashed_bytes": c.squashed,
                         "note": c.note} for c in self.changes],
            "partitions": [self._partition_dict(p) for p in layout.PARTITIONS],
        }

    def _partition_dict(self, p):
        u = self.uses.get(p.name)
        used = u.used if u else 0
        return {"name": p.name, "offset": p.offset, "size": p.size, "used": used,
                "free": p.size - used, "source": u.source if u else "erased (0xFF)"}

    def table(self):
        lines = ["Flash budget: " + self.title]
        if self.changes:
            lines.append("  %-44s %6s %11s %13s" % ("change", "files", "bytes", "in squashfs"))
            for c in self.changes:
                sq = ("not measured" if c.squashed is None
                      else "{:+,}".format(c.sign * c.squashed))
                lines.append("  %s %-42s %6d %11s %13s" % ("+" if c.sign > 0 else "-",
                             c.label, c.files, fmt(c.raw), sq))
                if c.note:
                    lines += textwrap.wrap(c.note, 88, initial_indent=" " * 6,
                                           subsequent_indent=" " * 6)
            lines.append("  %-44s %6s %11s %13s" % ("net change to the rootfs", "", "",
                                                    "{:+,}".format(self.net_added())))
        if self.rootfs_before is not None and "rootfs" in self.uses:
            lines.append("  rootfs squashfs: %s bytes before, %s after"
                         % (fmt(self.rootfs_before), fmt(self.uses["rootfs"].used)))
        lines.append("  %-12s %10s %12s %12s %12s  %s"
                     % ("partition", "offset", "size", "used", "free", "content"))
        for p in layout.PARTITIONS:
            d = self._partition_dict(p)
            free = fmt(d["free"]) if d["free"] >= 0 else "OVER " + fmt(-d["free"])
            lines.append("  %-12s %10s %12s %12s %12s  %s" % (p.name, "0x%06x" % p.offset,
                         fmt(p.size), fmt(d["used"]), free, d["source"]))
        return "\n".join(lines)

    def check(self):
        """Raise CamhostError naming each partition that overflows and how to make room."""
        over = self.overflows()
        if not over:
            return
        lines = ["%s does not fit: %s bytes for its %s-byte partition%s, %s bytes over."
                 % (p.name, fmt(self.uses[p.name].used), fmt(p.size),
                    " less %s bytes kept free" % fmt(SPARE[p.name]) if p.name in SPARE else "",
                    fmt(n)) for p, n in over]
        if self.suggestions:
            lines.append("Levers left to make room (measured on this firmware):")
            for label, squashed, loses in sorted(self.suggestions, key=lambda s: -(s[1] or 0)):
                size = "about %s bytes" % fmt(squashed) if squashed is not None else "space"
                lines += textwrap.wrap("%s frees %s; %s" % (label, size, loses), 88,
                                       initial_indent="  - ", subsequent_indent="    ")
        lines.append(self.table())
        raise CamhostError("\n".join(lines))
