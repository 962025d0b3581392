"""A style checker for buildroot-package/, in the spirit of Buildroot's utils/check-package.

Buildroot's own tool needs a Buildroot checkout; this one checks the same conventions
for the kinds of files our BR2_EXTERNAL tree has, so the test suite can run it:

- every file: no trailing whitespace, a final newline, no doubled or trailing blank lines;
- *.mk: the 80-hash header, tabs inside define/endef and continuations only, variables
  prefixed by the package name, one space before a backslash, $() not ${}, no ifdef;
- Config.in: attributes indented by one tab in the order type, default, depends, select,
  help; help text indented by a tab and two spaces, at most 62 characters; no
  `default n`; every config has help;
- init scripts S<NN><name>: indented with tabs, DAEMON defined and matching the file
  name, PIDFILE="/var/run/$DAEMON.pid" if there is one, not executable in a package
  directory (the .mk installs them 0755) but executable in an overlay;
- patches: a subject, an Upstream: line and a Signed-off-by;
- external.desc: `name:` and `desc:`; config fragments: only option lines and comments.

Usage: python tests/checkpackage.py FILE...   (prints problems, exits 1 if any)
"""
import os
import re
import sys

HEADER_HASHES = "#" * 80
MK_VARIABLE = re.compile(r"^(?:define\s+)?([A-Z0-9_]+_[A-Z0-9_]+)\s*(?:\+|:|\?)?=?")
MK_CONDITIONAL = re.compile(r"^\s*(ifeq|ifneq|ifdef|ifndef|else|endif)\b")
CONFIG_ENTRIES = ("choice", "comment", "config", "endchoice", "endif", "endmenu", "if",
                  "menu", "menuconfig", "source")
CONFIG_ATTRIBUTES = {"bool": 1, "prompt": 1, "string": 1, "int": 1, "hex": 1, "default": 2,
                     "depends": 3, "select": 4, "help": 5}
INIT_SCRIPT = re.compile(r"^S\d\d(.+)$")
FRAGMENT_LINE = re.compile(r"^(?:(?:BR2|CONFIG)_\w+=.*|# (?:BR2|CONFIG)_\w+ is not set)$")


def check_common(name, lines):
    out = []
    blank = 0
    for n, line in enumerate(lines, 1):
        if line != line.rstrip():
            out.append((n, "trailing whitespace"))
        blank = blank + 1 if not line.strip() else 0
        if blank == 2:
            out.append((n, "consecutive empty lines"))
    if lines and not lines[-1].strip():
        out.append((len(lines), "empty last line"))
    return out


def check_mk(name, lines):
    out = []
    package = os.path.basename(name)[:-3].replace("-", "_").upper()
    for n, expected in ((1, HEADER_HASHES), (2, "#"), (3, "# " + os.path.basename(name)[:-3]),
                        (4, "#"), (5, HEADER_HASHES), (6, "")):
        if n > len(lines) or lines[n - 1].rstrip() != expected:
            out.append((n, "header line should be %r" % expected))
    in_define = continued = False
    for n, line in enumerate(lines, 1):
        stripped = line.strip()
        if re.match(r"^define\s", line):
            in_define = True
        elif stripped == "endef":
            in_define = False
        elif stripped and not stripped.startswith("#"):
            tabbed = line.startswith("\t")
            if (in_define or continued) and not tabbed:
                out.append((n, "expected indent with tabs"))
            elif not (in_define or continued) and tabbed:
                out.append((n, "unexpected indent with tabs"))
        if line.startswith(" "):
            out.append((n, "indent with spaces"))
        continued = line.rstrip().endswith("\\") and not stripped.startswith("#")
        m = MK_VARIABLE.match(line)
        if m and not m.group(1).startswith(package + "_") and not line.startswith("\t"):
            out.append((n, "variable not prefixed by %s_: %s" % (package, m.group(1))))
        if re.search(r"(  |\t)\\$", line.rstrip("\n")):
            out.append((n, "use only one space before backslash"))
        if re.search(r"[^$]\$\{\w+\}", line) and not stripped.startswith("#"):
            out.append((n, "use $() to delimit variables, not ${}"))
        if re.match(r"^\s*(ifdef|ifndef)\s", line):
            out.append((n, "use ifeq ($(SYMBOL),y) instead of ifdef"))
        if re.search(r"_(INSTALL_TARGET|REDISTRIBUTE)\s*=\s*YES|_INSTALL_STAGING\s*=\s*NO",
                     line):
            out.append((n, "useless default value"))
    if not any("$(eval $(" in line for line in lines):
        out.append((len(lines), "no $(eval $(...-package)) line"))
    return out


def check_config(name, lines):
    out = []
    state = 0
    in_help = first_help_line = False
    current = None          # the config being read, and whether it got help
    helped = {}
    for n, line in enumerate(lines, 1):
        stripped = line.strip()
        if in_help:
            if not stripped:
                continue
            if line.startswith("\t  "):
                pattern = r"^\t  \S.{0,61}$" if first_help_line else r"^\t  .{0,62}$"
                first_help_line = False
                if not re.match(pattern, line) and not re.match(r"^\t  https?://\S*$", line):
                    out.append((n, "help text: <tab><2 spaces><62 chars>"))
                continue
            in_help = False
        if not stripped or stripped.startswith("#"):
            continue
        word = stripped.split()[0]
        if word in CONFIG_ENTRIES:
            if line[0].isspace():
                out.append((n, "%s should not be indented" % word))
            state = 0
            if word in ("config", "menuconfig"):
                current = stripped.split()[1]
                helped[current] = n
            elif word == "choice":
                current = "choice@%d" % n
                helped[current] = n
            else:
                current = None
            continue
        if word in CONFIG_ATTRIBUTES:
            if not line.startswith("\t" + word):
                out.append((n, "%s should be indented with one tab" % word))
            if CONFIG_ATTRIBUTES[word] < state:
                out.append((n, "attributes order: type, default, depends on, select, help"))
            state = CONFIG_ATTRIBUTES[word]
            if word == "help":
                in_help = first_help_line = True
                helped.pop(current, None)
            if re.match(r"^\tdefault n\b", line):
                out.append((n, "boolean symbols default to n; `default n` is redundant"))
    for symbol, n in helped.items():
        out.append((n, "%s has no help text" % symbol))
    return out


def check_init_script(name, lines, mode):
    out = []
    base = os.path.basename(name)
    daemon = None
    for n, line in enumerate(lines, 1):
        if re.match(r"^\t* ", line) and line.strip():
            out.append((n, "should be indented with tabs"))
        m = re.match(r"""^DAEMON=["']?([^"']*)["']?$""", line)
        if m:
            if daemon is not None:
                out.append((n, "DAEMON variable redefined"))
            daemon = m.group(1)
            if "/" in daemon:
                out.append((n, "do not include a path in DAEMON"))
        m = re.match(r"""^PIDFILE=["']?([^"']*)["']?$""", line)
        if m and m.group(1) not in ("/var/run/$DAEMON.pid", "/var/run/${DAEMON}.pid"):
            out.append((n, 'PIDFILE should be "/var/run/$DAEMON.pid"'))
    if daemon is None:
        out.append((0, "DAEMON variable not defined"))
    else:
        m = INIT_SCRIPT.match(base)
        if not m or m.group(1) != os.path.basename(daemon):
            out.append((0, "file name should be S<NN>%s" % os.path.basename(daemon)))
    # Buildroot keeps a package's init scripts non-executable (the .mk installs them
    # with -m 0755); files of a rootfs overlay are copied as they are.
    overlay = "/etc/init.d/" in os.path.abspath(name)
    if overlay and not mode & 0o111:
        out.append((0, "overlay init script is not executable"))
    if not overlay and mode & 0o111:
        out.append((0, "does not need to be executable: install it with $(INSTALL) -D -m 0755"))
    return out


def check_patch(name, lines):
    out = []
    text = "\n".join(lines)
    if not re.match(r"^\d{4}-[\w.+-]+\.patch$", os.path.basename(name)):
        out.append((0, "patch file name should be NNNN-description.patch"))
    for what, pattern in (("Subject:", r"^Subject: "), ("Upstream:", r"^Upstream: \S"),
                          ("Signed-off-by:", r"^Signed-off-by: .+ <[^>]+>$")):
        if not re.search(pattern, text, re.M):
            out.append((0, "missing %s line" % what))
    return out


def check_external_desc(name, lines):
    out = []
    if not lines or not re.match(r"^name: [A-Za-z0-9_]+$", lines[0]):
        out.append((1, "first line should be `name: NAME` (letters, digits, _)"))
    if not any(line.startswith("desc: ") for line in lines):
        out.append((0, "no `desc:` line"))
    return out


def check_fragment(name, lines):
    return [(n, "not an option line or a comment: %r" % line)
            for n, line in enumerate(lines, 1)
            if line.strip() and not line.startswith("#") and not FRAGMENT_LINE.match(line)] + \
           [(n, "malformed option line: %r" % line)
            for n, line in enumerate(lines, 1)
            if line.startswith("# ") and re.match(r"^# (BR2|CONFIG)_\w+ ", line)
            and not FRAGMENT_LINE.match(line)]


def checks_for(path):
    base = os.path.basename(path)
    if base.endswith(".mk") and base != "external.mk":
        return check_mk
    if base.startswith("Config.in"):
        return check_config
    if INIT_SCRIPT.match(base):
        return check_init_script
    if base.endswith(".patch"):
        return check_patch
    if base == "external.desc":
        return check_external_desc
    if base.endswith(".fragment"):
        return check_fragment
    return None


def check(path):
    """["file:line: message"] for one file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")
    problems = []
    if text and not text.endswith("\n"):
        problems.append((len(lines), "missing newline at end of file"))
    lines = lines[:-1] if text.endswith("\n") else lines
    if not path.endswith(".patch"):       # a patch's context lines are not ours to style
        problems += check_common(path, lines)
    checker = checks_for(path)
    if checker is check_init_script:
        problems += checker(path, lines, os.stat(path).st_mode)
    elif checker:
        problems += checker(path, lines)
    return ["%s:%d: %s" % (path, n, msg) for n, msg in problems]


def check_tree(root):
    """Check every file of a BR2_EXTERNAL tree."""
    problems = []
    for d, dirs, names in os.walk(root):
        dirs.sort()
        for n in sorted(names):
            problems += check(os.path.join(d, n))
    return problems


def main(argv):
    problems = []
    for path in argv:
        problems += check_tree(path) if os.path.isdir(path) else check(path)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
