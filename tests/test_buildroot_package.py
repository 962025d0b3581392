"""The BR2_EXTERNAL tree: Kconfig (kconfiglib), style (tests/checkpackage.py), and that
camagent.mk installs what `camhost image repack` installs."""
import glob
import json
import os
import re
import shlex
import shutil
import subprocess

import kconfiglib
import pytest

import checkpackage
from camhost import boards, repack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXTERNAL = os.path.join(ROOT, "buildroot-package")
MK = os.path.join(EXTERNAL, "package", "camagent", "camagent.mk")

# The Buildroot and OpenIPC symbols our Config.in refers to; a fragment sets the
# string options.
STUB = """
config BR2_arm
\tbool
\tdefault y

config BR2_LINUX_KERNEL
\tbool "linux"
\tdefault y

config BR2_TOOLCHAIN_HAS_THREADS
\tbool "threads"
\tdefault y

config BR2_STATIC_LIBS
\tbool "static"

config BR2_PACKAGE_MICROPYTHON
\tbool "micropython"
\tdepends on BR2_TOOLCHAIN_HAS_THREADS
\tdepends on !BR2_STATIC_LIBS

config BR2_PACKAGE_SSV615X_OPENIPC
\tbool "ssv615x-openipc"

config BR2_PACKAGE_SSV635X_OPENIPC
\tbool "ssv635x-openipc"

config BR2_PACKAGE_ONVIF_SIMPLE_SERVER
\tbool "onvif-simple-server"

config BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES
\tstring "kernel fragments"

config BR2_GLOBAL_PATCH_DIR
\tstring "patch dirs"

menu "External options"
source "$(BR2_EXTERNAL_CAMAGENT_PATH)/Config.in"
endmenu
"""


@pytest.fixture
def kconf(tmp_path, monkeypatch):
    monkeypatch.setenv("BR2_EXTERNAL_CAMAGENT_PATH", EXTERNAL)
    monkeypatch.setenv("CONFIG_", "")     # Buildroot's symbols carry their BR2_ prefix
    top = tmp_path / "Config.in"
    top.write_text(STUB)
    k = kconfiglib.Kconfig(str(top), warn_to_stderr=False)
    return k


def ours(k):
    return [s for s in k.unique_defined_syms if s.name.startswith("BR2_PACKAGE_CAMAGENT")]


def test_kconfig_parses_without_warnings(kconf):
    assert kconf.warnings == []
    names = {s.name for s in ours(kconf)}
    assert names == {"BR2_PACKAGE_CAMAGENT", "BR2_PACKAGE_CAMAGENT_BOARD",
                     "BR2_PACKAGE_CAMAGENT_BOARD_IMOU_RANGER_RC_4MP",
                     "BR2_PACKAGE_CAMAGENT_BOARD_IMOU_RANGER_RC_3MP",
                     "BR2_PACKAGE_CAMAGENT_ONVIF", "BR2_PACKAGE_CAMAGENT_FROZEN"}


def test_onvif_option_needs_the_onvif_server(kconf):
    onvif = kconf.syms["BR2_PACKAGE_CAMAGENT_ONVIF"]
    kconf.syms["BR2_PACKAGE_CAMAGENT"].set_value("y")
    onvif.set_value("y")
    assert onvif.str_value == "n"       # OpenIPC's package is not selected
    kconf.syms["BR2_PACKAGE_ONVIF_SIMPLE_SERVER"].set_value("y")
    onvif.set_value("y")
    assert onvif.str_value == "y"


def test_every_option_has_help(kconf):
    for sym in ours(kconf):
        assert all(node.help for node in sym.nodes), sym.name
    for choice in kconf.unique_choices:
        assert all(node.help for node in choice.nodes)


def test_camagent_selects_micropython_not_micropython_lib(kconf):
    kconf.syms["BR2_PACKAGE_CAMAGENT"].set_value(2)
    assert kconf.syms["BR2_PACKAGE_MICROPYTHON"].tri_value == 2
    assert "BR2_PACKAGE_MICROPYTHON_LIB" not in kconf.syms


# The wifi driver package (OpenIPC's) each board's module needs.
WIFI = {"imou-ranger-rc-4mp": "BR2_PACKAGE_SSV615X_OPENIPC",
        "imou-ranger-rc-3mp": "BR2_PACKAGE_SSV635X_OPENIPC"}


def choice(board):
    return "BR2_PACKAGE_CAMAGENT_BOARD_" + board.upper().replace("-", "_")


@pytest.mark.parametrize("board", sorted(boards.BOARDS))
def test_board_choice_selects_the_wifi_driver(kconf, board):
    assert set(WIFI) == set(boards.BOARDS)
    kconf.syms["BR2_PACKAGE_CAMAGENT"].set_value(2)
    kconf.syms[choice(board)].set_value(2)
    assert kconf.syms["BR2_PACKAGE_CAMAGENT_BOARD"].str_value == board
    for other, package in WIFI.items():
        assert kconf.syms[package].tri_value == (2 if other == board else 0)


@pytest.mark.parametrize("symbol, value", [("BR2_STATIC_LIBS", 2),
                                           ("BR2_TOOLCHAIN_HAS_THREADS", 0),
                                           ("BR2_LINUX_KERNEL", 0)])
def test_needs_threads_shared_libraries_and_a_kernel(kconf, symbol, value):
    kconf.syms[symbol].set_value(value)
    kconf.syms["BR2_PACKAGE_CAMAGENT"].set_value(2)
    assert kconf.syms["BR2_PACKAGE_CAMAGENT"].tri_value == 0


@pytest.mark.parametrize("board", sorted(boards.BOARDS))
def test_fragments_pick_their_board_and_the_mac80211_kernel_fragment(kconf, board, tmp_path):
    b = boards.BOARDS[board]
    path = os.path.join(EXTERNAL, "configs", b.fragment)
    assert b.openipc_board + "_defconfig" in open(path).read()
    kconf.load_config(path)
    assert kconf.warnings == []
    assert kconf.syms["BR2_PACKAGE_CAMAGENT_BOARD"].str_value == board
    assert kconf.syms[WIFI[board]].tri_value == 2
    frags = kconf.syms["BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES"].str_value.split()
    assert frags == ["$(BR2_EXTERNAL_CAMAGENT_PATH)/board/imou-ranger-rc/linux.fragment"]
    linux = open(frags[0].replace("$(BR2_EXTERNAL_CAMAGENT_PATH)", EXTERNAL)).read()
    assert re.search(r"^CONFIG_MAC80211=m$", linux, re.M)
    dirs = kconf.syms["BR2_GLOBAL_PATCH_DIR"].str_value.split()
    assert dirs == ["$(BR2_EXTERNAL_CAMAGENT_PATH)/patches/common",
                    "$(BR2_EXTERNAL_CAMAGENT_PATH)/patches/lean"]
    for d in dirs:
        assert os.listdir(os.path.join(d.replace("$(BR2_EXTERNAL_CAMAGENT_PATH)", EXTERNAL),
                                       "micropython"))


def test_agent_knows_every_board(kconf):
    from camagent import boards as agent_boards
    assert set(boards.BOARDS) <= set(agent_boards.BOARDS)


# --- style ---------------------------------------------------------------------------------

def test_tree_passes_the_style_check():
    assert checkpackage.check_tree(EXTERNAL) == []
    assert checkpackage.check(os.path.join(ROOT, "overlay", "etc", "init.d",
                                           "S34boardpower")) == []


def test_external_desc_names_the_tree():
    text = open(os.path.join(EXTERNAL, "external.desc")).read()
    assert text.splitlines()[0] == "name: CAMAGENT"


BAD_MK = """################################################################################
#
# camagent
#
################################################################################

CAMAGENT_VERSION = 1.0
MICROPYTHON_MAKE_OPTS += VARIANT=minimal
define CAMAGENT_BUILD_CMDS
    $(MAKE) -C $(@D)  \\
\tFOO=${BAR}
endef
ifdef BR2_foo
CAMAGENT_INSTALL_TARGET = YES
endif
"""

BAD_CONFIG = """config BR2_PACKAGE_CAMAGENT
\tbool "camagent"
\thelp
\t  This help line is far too long for Buildroot's help text rules, really.
\tselect BR2_PACKAGE_MICROPYTHON
  default n

config BR2_PACKAGE_CAMAGENT_NOHELP
\tbool "no help"
"""

BAD_INIT = """#!/bin/sh
DAEMON="/usr/bin/camagent2"
PIDFILE="/tmp/camagent.pid"
start() {
    echo start
}
"""


@pytest.mark.parametrize("name, text, expected", [
    ("camagent.mk", BAD_MK, ["variable not prefixed by CAMAGENT_: MICROPYTHON_MAKE_OPTS",
                             "expected indent with tabs", "use only one space before backslash",
                             "use $() to delimit variables, not ${}",
                             "use ifeq ($(SYMBOL),y) instead of ifdef", "useless default value",
                             "no $(eval $(...-package)) line"]),
    ("Config.in", BAD_CONFIG, ["help text: <tab><2 spaces><62 chars>",
                               "attributes order: type, default, depends on, select, help",
                               "default should be indented with one tab",
                               "BR2_PACKAGE_CAMAGENT_NOHELP has no help text"]),
    ("S96camagent", BAD_INIT, ["should be indented with tabs",
                               "do not include a path in DAEMON",
                               "file name should be S<NN>camagent2",
                               'PIDFILE should be "/var/run/$DAEMON.pid"']),
    ("0001-x.patch", "--- a/x\n+++ b/x\n", ["missing Subject: line",
                                            "missing Upstream: line",
                                            "missing Signed-off-by: line"]),
    ("linux.fragment", "CONFIG_MAC80211=m\nMAC80211=y\n", ["not an option line"]),
    ("external.desc", "name: cam-agent\n", ["first line should be `name: NAME`",
                                            "no `desc:` line"]),
])
def test_style_check_catches_violations(tmp_path, name, text, expected):
    path = tmp_path / "package" / name
    path.parent.mkdir()
    path.write_text(text + "\n\n")
    problems = "\n".join(checkpackage.check(str(path)))
    common = [] if name.endswith(".patch") else ["empty last line"]
    for message in expected + common:
        assert message in problems, message


def test_style_check_wants_package_init_scripts_non_executable(tmp_path):
    script = tmp_path / "package" / "S96camagent"
    script.parent.mkdir()
    shutil.copyfile(os.path.join(EXTERNAL, "package", "camagent", "S96camagent"), script)
    assert checkpackage.check(str(script)) == []
    os.chmod(script, 0o755)
    assert "does not need to be executable" in "\n".join(checkpackage.check(str(script)))


# --- camagent.mk and the repack path install the same files --------------------------------

def mk_installs():
    """{rootfs path: (source, mode)} from camagent.mk's $(INSTALL) lines."""
    text = re.sub(r"\s*\\\n\s*", " ", open(MK).read())
    found = {}
    for line in text.splitlines():
        m = re.search(r"\$\(INSTALL\) (-D )?-m (\d+) (-t (\S+) )?(\S+)(?: (\S+))?$",
                      line.strip())
        if not m:
            continue
        _, mode, _, into, src, dest = m.groups()
        dest = os.path.join(into, os.path.basename(src)) if into else dest
        src = src.replace("$(CAMAGENT_PKGDIR)", "buildroot-package/package/camagent")
        found[dest.replace("$(TARGET_DIR)/", "")] = (src.replace("$(@D)/", ""), int(mode, 8))
    return found


def test_mk_and_repack_install_the_same_files():
    mk = mk_installs()
    expected = {target: (source, mode) for source, target, mode in repack.FILES}
    expected["usr/lib/micropython/camagent/*.mpy"] = ("mpy/camagent/*.mpy", 0o644)
    expected["usr/lib/micropython/umqtt/simple.mpy"] = ("mpy/umqtt/simple.mpy", 0o644)
    # built images only (BR2_PACKAGE_CAMAGENT_ONVIF): a lite firmware has no ONVIF server
    expected["etc/onvif.conf"] = ("overlay/etc/onvif.conf", 0o644)
    assert mk == expected
    assert repack.MPY_TARGET == "usr/lib/micropython"


def test_mk_board_edit_matches_repack(tmp_path):
    """camagent.mk's sed and repack.config_for() give the same /etc/camagent.json."""
    sed = re.search(r"\$\(SED\) '([^']+)'", open(MK).read()).group(1)
    for board in boards.BOARDS:
        copy = tmp_path / "camagent.json"
        shutil.copyfile(os.path.join(ROOT, "overlay", "etc", "camagent.json"), copy)
        subprocess.run(["sed", "-i", sed.replace("$(CAMAGENT_BOARD)", board), str(copy)],
                       check=True)
        assert copy.read_text() == repack.config_for(board)


def test_default_config_loads_in_the_agent():
    from camagent import config
    path = os.path.join(ROOT, "overlay", "etc", "camagent.json")
    # Only what a user must set, plus the one setting the image needs to differ from the
    # agent's default: an edited copy hides this file, and any default in it would stay
    # frozen there while the agent's defaults move on.
    with open(path) as f:
        shipped = json.load(f)
    assert set(shipped) == {"board", "sd_reset_on_start", "mqtt", "majestic"}
    assert set(shipped["mqtt"]) == {"host", "username", "password"}
    # majestic exists on the camera, not where the agent is developed (default: off)
    assert shipped["majestic"] == {"port": 80} and config.DEFAULTS["majestic"]["port"] == 0
    # parse, not load: load would make /overlay/camagent on this machine
    with open(path) as f:
        cfg = config.parse(f.read(), path)
    assert cfg["board"] == "imou-ranger-rc-4mp"
    assert cfg["gpio_root"] == "/sys/class/gpio"
    assert cfg["state_dir"] == "/overlay/camagent"
    assert cfg["wifi_power"] is True
    assert cfg["mqtt"]["host"]
    # S34boardpower has reset the SD reader at boot; the agent must not do it again
    # with the card mounted.
    assert cfg["sd_reset_on_start"] is False


def test_external_mk_includes_our_packages_and_repoints_br2_external(tmp_path):
    """Run external.mk in make as Buildroot would: with our tree listed first."""
    general = tmp_path / "general"
    general.mkdir()
    (tmp_path / "Makefile").write_text(
        "BR2_EXTERNAL_CAMAGENT_PATH = %s\n"
        "BR2_EXTERNAL_GENERAL_PATH = %s\n"
        "generic-package =\n"
        "include $(BR2_EXTERNAL_CAMAGENT_PATH)/external.mk\n"
        "show:\n\t@echo $(BR2_EXTERNAL) $(CAMAGENT_VERSION)\n" % (EXTERNAL, general))
    out = subprocess.run(["make", "-s", "-C", str(tmp_path), "show",
                          "BR2_EXTERNAL=%s:%s" % (EXTERNAL, general)],
                         check=True, stdout=subprocess.PIPE).stdout.decode().split()
    assert out == [str(general), "0.1.0"]


def test_license_is_mit_and_the_package_declares_it():
    """Buildroot's legal-info reads CAMAGENT_LICENSE(_FILES); the file must be copied in."""
    text = open(os.path.join(ROOT, "LICENSE")).read()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 camagent contributors" in text
    mk = open(MK).read()
    assert re.search(r"^CAMAGENT_LICENSE = MIT$", mk, re.M)
    assert re.search(r"^CAMAGENT_LICENSE_FILES = LICENSE$", mk, re.M)
    # the rsync filter copies only what it includes: LICENSE must be among it
    assert "--include='/LICENSE'" in mk


def test_patches_are_signed_off_by_a_real_identity():
    for path in sorted(glob.glob(os.path.join(EXTERNAL, "patches", "*", "*", "*.patch"))):
        lines = open(path).read().splitlines()
        signed = [line for line in lines if line.startswith("Signed-off-by: ")]
        assert signed, path
        for line in signed:
            assert not line.rstrip(">").endswith(".invalid"), (path, line)
            assert re.match(r"^Signed-off-by: [^<]+ <[^@\s]+@[^@\s]+\.[a-z]+>$", line), line


# --- the MicroPython patch series ----------------------------------------------------------

# The patch dirs each way `camhost image build` builds the interpreter lists, in order
# (Buildroot applies BR2_GLOBAL_PATCH_DIR's directories one after the other).
PROFILES = {"lean": ["common", "lean"], "tls": ["common", "lean", "tls"]}
FD_FIX = "0001-extmod-vfs_posix_file-ensure-file-object-has-safe-default-fd.patch"
MICROPYTHON_SRC = os.environ.get("MICROPYTHON_SRC") or "/opt/mp122src"


def series(profile):
    return [p for d in PROFILES[profile]
            for p in sorted(glob.glob(os.path.join(EXTERNAL, "patches", d, "micropython",
                                                   "*.patch")))]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_interpreter_gets_the_failed_open_fd_fix_first(profile):
    """MicroPython 1.22's failed open() closes fd 0 when collected (upstream issue 13672):
    the backport is in patches/common, which every profile lists first."""
    patches = series(profile)
    assert os.path.basename(patches[0]) == FD_FIX
    text = open(patches[0]).read()
    assert "2962e24167" in text and "+    o->fd = -1;" in text
    assert checkpackage.check(patches[0]) == []


@pytest.mark.skipif(not os.path.isfile(os.path.join(MICROPYTHON_SRC, "extmod",
                                                    "vfs_posix_file.c")),
                    reason="no MicroPython 1.22.0 source (set MICROPYTHON_SRC)")
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_patch_series_applies_to_pristine_v1_22_0(profile, tmp_path):
    """Each profile's series, in Buildroot's order, applies cleanly (no fuzz) to v1.22.0,
    and the file object then starts at fd -1 before anything in open can fail."""
    patches = series(profile)
    touched = set()
    for p in patches:
        touched.update(re.findall(r"^\+\+\+ b/(\S+)", open(p).read(), re.M))
    for rel in touched:
        os.makedirs(os.path.dirname(str(tmp_path / rel)), exist_ok=True)
        shutil.copyfile(os.path.join(MICROPYTHON_SRC, rel), str(tmp_path / rel))
    for p in patches:
        out = subprocess.run(["patch", "-p1", "-F0", "-N", "-i", p], cwd=str(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert out.returncode == 0, (p, out.stdout)
        assert "offset" not in out.stdout and "fuzz" not in out.stdout, out.stdout
    src = (tmp_path / "extmod" / "vfs_posix_file.c").read_text()
    body = src[src.index("mp_obj_t mp_vfs_posix_file_open("):]
    alloc = body.index("m_new_obj_with_finaliser(mp_obj_vfs_posix_file_t);")
    assert body.index("o->fd = -1;") > alloc
    assert body.index("o->fd = -1;") < body.index("mp_obj_str_get_str(mode_in)")


# --- BR2_PACKAGE_CAMAGENT_FROZEN: the agent frozen into Buildroot's micropython ------------

def mk_variables(frozen):
    """MICROPYTHON_MAKE_OPTS and camagent's build and install commands, as make reads
    the tree (external.mk, which includes camagent.mk) with the option on or off."""
    out = subprocess.run(
        ["make", "-s", "-f", "-", "show", "BR2_EXTERNAL_CAMAGENT_PATH=" + EXTERNAL,
         "BR2_PACKAGE_CAMAGENT_FROZEN=" + ("y" if frozen else "")],
        input=("define newline\n\n\nendef\n"
               "generic-package =\ninclude %s/external.mk\n"
               "$(info $(MICROPYTHON_MAKE_OPTS))\n"
               "$(info $(subst $(newline), ,$(CAMAGENT_BUILD_CMDS)))\n"
               "$(info $(subst $(newline), ,$(CAMAGENT_INSTALL_TARGET_CMDS)))\n"
               "show: ; @:\n" % EXTERNAL).encode(),
        check=True, stdout=subprocess.PIPE).stdout.decode()
    opts, build, install = out.split("\n")[:3]
    return shlex.split(opts), build, install


def test_frozen_option_hands_micropython_the_manifest_and_installs_no_mpy():
    opts, build, install = mk_variables(frozen=True)
    values = dict(o.split("=", 1) for o in opts)
    assert set(values) == {"FROZEN_MANIFEST", "MICROPY_MANIFEST_CAMAGENT_AGENT",
                           "MPY_CROSS_FLAGS"}
    # frozen bytecode is compiled with the .mpy path's options
    assert values["MPY_CROSS_FLAGS"].split() == list(repack.MPY_OPTS)
    assert os.path.isfile(values["FROZEN_MANIFEST"])
    assert os.path.samefile(values["MICROPY_MANIFEST_CAMAGENT_AGENT"],
                            os.path.join(ROOT, "agent"))
    assert build.strip() == "" and ".mpy" not in install
    assert "/etc/camagent.json" in install       # everything else is installed as before


def test_without_the_option_micropython_is_untouched_and_the_mpy_are_installed():
    opts, build, install = mk_variables(frozen=False)
    assert opts == []
    assert "mpy-cross" in build and "camagent/*.mpy" in install and "simple.mpy" in install
    # camagent.mk compiles with repack's options: an image built either way ships the
    # same bytecode (both mpy-cross calls: the agent's modules and umqtt.simple)
    assert build.count("mpy-cross %s -s " % " ".join(repack.MPY_OPTS)) == 2, build


@pytest.mark.skipif(not os.path.isfile(os.path.join(MICROPYTHON_SRC, "tools",
                                                    "manifestfile.py")),
                    reason="no MicroPython 1.22.0 source (set MICROPYTHON_SRC)")
def test_frozen_manifest_freezes_what_the_mpy_path_installs(tmp_path, monkeypatch):
    """MicroPython's own manifest reader, on our manifest with camagent.mk's variables:
    every agent module and umqtt.simple, as the same module paths repack compiles."""
    monkeypatch.syspath_prepend(os.path.join(MICROPYTHON_SRC, "tools"))
    import manifestfile
    opts = dict(o.split("=", 1) for o in mk_variables(frozen=True)[0])
    lib = tmp_path / "micropython-lib"     # the tarball's submodule: only umqtt.simple
    pkg = lib / "micropython" / "umqtt.simple"
    (pkg / "umqtt").mkdir(parents=True)
    (pkg / "manifest.py").write_text('package("umqtt")\n')
    shutil.copyfile(repack.UMQTT_SOURCE, str(pkg / "umqtt" / "simple.py"))
    m = manifestfile.ManifestFile(manifestfile.MODE_FREEZE, {
        "MPY_DIR": MICROPYTHON_SRC, "MPY_LIB_DIR": str(lib),
        "CAMAGENT_AGENT": opts["MICROPY_MANIFEST_CAMAGENT_AGENT"]})
    m.execute(opts["FROZEN_MANIFEST"])
    frozen = sorted(f.target_path for f in m.files())
    assert frozen == sorted(module for _, module in repack.agent_sources())
