"""OpenIPC's Buildroot build with camagent's BR2_EXTERNAL tree added.

OpenIPC's Makefile runs Buildroot with BR2_EXTERNAL=general only. We run the same
three steps ourselves so that our tree can be added:

1. `make -C OPENIPC BOARD=<board> TARGET=<output> prepare` (OpenIPC's own step:
   fetches Buildroot 2024.02.10 and hooks general/linux/Config.ext.in into it);
2. `make -C <output>/buildroot-<ver> O=<output> BR2_EXTERNAL=<ours>:<openipc>/general
   BR2_DEFCONFIG=<merged> defconfig`, where <merged> is the board's defconfig,
   general/openipc.fragment, our board fragment and the slimming profile;
3. the same with `all`.

Our tree comes first in BR2_EXTERNAL: general's makefiles use $(BR2_EXTERNAL) as
their own path, and our external.mk points it back at general for them.
"""
import glob
import os
import re
import subprocess
from collections import namedtuple, deque

from . import slim
from .errors import CamhostError
from .repack import ROOT

EXTERNAL = os.path.join(ROOT, "buildroot-package")
LOG_NAME = "camagent-build.log"
LOG_TAIL = 40
# Variables a parent make (`make image`) would pass down and that must not reach
# OpenIPC's or Buildroot's make.
SCRUBBED_ENV = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "BR2_EXTERNAL",
                "BR2_DEFCONFIG", "O", "BOARD", "TARGET")
# OpenIPC's Makefile exports this for packages whose CMake files predate CMake 4.
EXTRA_ENV = {"CMAKE_POLICY_VERSION_MINIMUM": "3.5"}
# Options our fragments extend rather than replace (space-separated lists).
LIST_OPTIONS = ("BR2_GLOBAL_PATCH_DIR", "BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES",
                "BR2_ROOTFS_OVERLAY", "BR2_ROOTFS_POST_BUILD_SCRIPT")
OPTION = re.compile(r"^(?:# )?(BR2_\w+)(?:=(.*)| is not set)$")

Tree = namedtuple("Tree", "path br_version board_defconfig")
Step = namedtuple("Step", "what argv cwd")
Plan = namedtuple("Plan", "tree output buildroot defconfig_path defconfig linux_slim_path "
                          "linux_slim steps env log images")


def check_tree(path, b):
    """The OpenIPC firmware tree at `path`, or a CamhostError saying what is missing."""
    # never suggest cloning into a directory that exists and holds something else
    target = path if not (os.path.isdir(path) and os.listdir(path)) else \
        os.path.join(path, "openipc-firmware")
    how = ("clone it with `git clone https://github.com/OpenIPC/firmware %s` and pass "
           "--openipc %s (make image OPENIPC=DIR)" % (target, target))
    if not os.path.isdir(path):
        raise CamhostError("OpenIPC firmware tree not found at %s: %s" % (path, how))
    makefile = os.path.join(path, "Makefile")
    try:
        with open(makefile) as f:
            m = re.search(r"^BR_VER\s*[:?]?=\s*(\S+)", f.read(), re.M)
    except OSError:
        m = None
    if not m:
        raise CamhostError("%s is not OpenIPC's firmware tree (no Makefile with BR_VER): %s"
                           % (path, how))
    for rel in ("general/external.desc", "general/openipc.fragment"):
        if not os.path.isfile(os.path.join(path, rel)):
            raise CamhostError("%s has no %s: not a complete OpenIPC firmware tree: %s"
                               % (path, rel, how))
    found = sorted(glob.glob(os.path.join(path, "br-ext-chip-*", "configs",
                                          b.openipc_board + "_defconfig")))
    if not found:
        raise CamhostError("%s has no br-ext-chip-*/configs/%s_defconfig, which board %s "
                           "builds on: update the tree (git pull)"
                           % (path, b.openipc_board, b.name))
    return Tree(os.path.abspath(path), m.group(1), found[0])


def read_options(text):
    """[(symbol or None, line)] for a defconfig or fragment."""
    out = []
    for line in text.splitlines():
        m = OPTION.match(line.strip())
        out.append((m.group(1) if m else None, line))
    return out


def merge(sections):
    """Merge defconfig sections [(label, text, extends_lists)].

    A later setting of an option replaces the earlier one (as kconfig would), except
    that a section with extends_lists=True appends to LIST_OPTIONS.
    """
    merged = []         # [label or (symbol, line)]
    where = {}          # symbol -> index in merged
    for label, text, extends in sections:
        merged.append("# --- %s" % label)
        for symbol, line in read_options(text):
            if symbol is None:
                if line.strip() and not line.startswith("#"):
                    raise CamhostError("%s: not a defconfig line: %r" % (label, line))
                continue
            if symbol in where:
                old = merged[where[symbol]][1]
                merged[where[symbol]] = None
                if extends and symbol in LIST_OPTIONS:
                    line = '%s="%s %s"' % (symbol, _value(old), _value(line))
            where[symbol] = len(merged)
            merged.append((symbol, line))
    return "\n".join(m if isinstance(m, str) else m[1] for m in merged if m is not None) + "\n"


def _value(line):
    m = OPTION.match(line)
    return (m.group(2) or "").strip('"')


def clean_env(environ=None):
    env = dict(os.environ if environ is None else environ)
    for name in SCRUBBED_ENV:
        env.pop(name, None)
    env.update(EXTRA_ENV)
    return env


def plan(openipc, b, output=None, slim_profile=slim.DEFAULT_PROFILE, tls=False, jobs=None,
         environ=None, drop_webui=False, onvif=False, frozen=True):
    """Everything `camhost image build` will do, without doing it."""
    tree = check_tree(openipc, b)
    output = os.path.abspath(output or os.path.join(tree.path, "output-camagent-" + b.name))
    buildroot = os.path.join(output, "buildroot-" + tree.br_version)
    items = slim.profile(slim_profile, drop_webui)
    defconfig_path = os.path.join(output, "camagent_defconfig")
    linux_slim_path = os.path.join(output, "camagent-linux-slim.fragment")
    linux_slim = "".join(line + "\n" for line in slim.linux_config_lines(items))

    with open(tree.board_defconfig) as f:
        board_text = f.read()
    with open(os.path.join(tree.path, "general", "openipc.fragment")) as f:
        fragment_text = f.read()
    with open(os.path.join(EXTERNAL, "configs", b.fragment)) as f:
        ours = f.read()
    sections = [(os.path.relpath(tree.board_defconfig, tree.path), board_text, False),
                ("general/openipc.fragment", fragment_text, False)]
    patch_dir = [line for line in board_text.splitlines()
                 if line.startswith("BR2_GLOBAL_PATCH_DIR=")]
    if patch_dir:   # OpenIPC's Makefile re-applies the board's own patch dir
        sections.append(("the board's BR2_GLOBAL_PATCH_DIR, as OpenIPC's Makefile "
                         "re-applies it", "\n".join(patch_dir), False))
    sections.append(("camagent: buildroot-package/configs/" + b.fragment, ours, True))
    extra = slim.kconfig_lines(items)
    if linux_slim:
        extra.append('BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES="%s"' % linux_slim_path)
    if tls:
        extra.append('BR2_GLOBAL_PATCH_DIR="$(BR2_EXTERNAL_CAMAGENT_PATH)/patches/tls"')
    if onvif:   # OpenIPC's package, and our onvif.conf wired to the agent
        extra += ["BR2_PACKAGE_ONVIF_SIMPLE_SERVER=y", "BR2_PACKAGE_CAMAGENT_ONVIF=y"]
    # the agent frozen into micropython (the default), or installed as .mpy files
    extra.append("BR2_PACKAGE_CAMAGENT_FROZEN=y" if frozen
                 else "# BR2_PACKAGE_CAMAGENT_FROZEN is not set")
    label = "camagent: slimming profile %s%s%s%s%s" % (slim_profile or "(none)",
                                                       ", --drop-webui" if drop_webui else "",
                                                       ", TLS" if tls else "",
                                                       ", ONVIF" if onvif else "",
                                                       ", agent as .mpy files" if not frozen
                                                       else "")
    sections.append((label, "\n".join(extra), True))
    defconfig = merge(sections)

    external = "%s:%s" % (EXTERNAL, os.path.join(tree.path, "general"))
    br = ["make", "-C", buildroot, "O=" + output, "BR2_EXTERNAL=" + external]
    steps = [
        Step("fetch Buildroot %s (OpenIPC's prepare)" % tree.br_version,
             ["make", "-C", tree.path, "BOARD=" + b.openipc_board, "TARGET=" + output,
              "prepare"], tree.path),
        Step("configure", br + ["BR2_DEFCONFIG=" + defconfig_path, "defconfig"], tree.path),
        Step("build", br + ["-j%d" % (jobs or os.cpu_count() or 1), "all"], tree.path),
    ]
    images = {"kernel": os.path.join(output, "images", "uImage"),
              "rootfs": os.path.join(output, "images", "rootfs.squashfs")}
    return Plan(tree, output, buildroot, defconfig_path, defconfig, linux_slim_path,
                linux_slim, steps, clean_env(environ), os.path.join(output, LOG_NAME), images)


def describe(p):
    """The plan as text: files written, then each command with its environment changes."""
    lines = ["would write %s:" % p.defconfig_path]
    lines += ["    " + line for line in p.defconfig.splitlines()]
    if p.linux_slim:
        lines.append("would write %s:" % p.linux_slim_path)
        lines += ["    " + line for line in p.linux_slim.splitlines()]
    lines.append("environment: %s; without %s"
                 % (" ".join("%s=%s" % kv for kv in sorted(EXTRA_ENV.items())),
                    " ".join(SCRUBBED_ENV)))
    for step in p.steps:
        lines.append("%s:\n    cd %s && %s" % (step.what, step.cwd, " ".join(step.argv)))
    lines.append("log: %s" % p.log)
    return "\n".join(lines)


def run(p, echo=print):
    """Run the plan, teeing output to its log; CamhostError with the log's tail on failure."""
    os.makedirs(p.output, exist_ok=True)
    with open(p.defconfig_path, "w") as f:
        f.write(p.defconfig)
    if p.linux_slim:
        with open(p.linux_slim_path, "w") as f:
            f.write(p.linux_slim)
    with open(p.log, "w") as log:
        for step in p.steps:
            echo(">>> camhost: %s" % step.what)
            log.write("$ cd %s && %s\n" % (step.cwd, " ".join(step.argv)))
            log.flush()
            tail = deque(maxlen=LOG_TAIL)
            try:
                proc = subprocess.Popen(step.argv, cwd=step.cwd, env=p.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            except FileNotFoundError:
                raise CamhostError("make not found: install build-essential "
                                   "(OpenIPC: `make deps` in its tree)") from None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                log.write(line + "\n")
                tail.append(line)
                echo(line)
            code = proc.wait()
            if code:
                raise CamhostError("OpenIPC build step '%s' failed (make exited with %d). "
                                   "Full log: %s\nLast %d lines:\n%s"
                                   % (step.what, code, p.log, len(tail), "\n".join(tail)))
    for name, path in sorted(p.images.items()):
        if not os.path.isfile(path):
            raise CamhostError("the build finished but %s is missing; see %s" % (path, p.log))
    return p.images


def package_files(output, packages):
    """{package: [target paths]} from Buildroot's packages-file-list.txt."""
    found = {name: [] for name in packages}
    path = os.path.join(output, "build", "packages-file-list.txt")
    if not os.path.isfile(path):
        return found
    with open(path) as f:
        for line in f:
            name, _, rel = line.rstrip("\n").partition(",")
            if name in found:
                found[name].append(rel[2:] if rel.startswith("./") else rel)
    return found
