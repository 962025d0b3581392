"""The flash budget on a release sized like OpenIPC's ssc337 lite image.

Sizes in squashfs (the files are incompressible filler, so squashed is about raw):
- the rootfs leaves 60 KB of the 5 MiB partition free (lite builds use 5,060-5,128 KB);
- the ISP tuning files of 15 sensors, 100 KB together (measured on a lite image, see
  docs/images.md), and 8 sensor drivers of 10 KB;
- the web UI 170 KB (majestic-webui ~150 KB, haserl), NFS 170 KB, vtun 25 KB;
- added: a lean MicroPython (96,577 bytes, measured), the agent; mac80211 110 KB (from
  OpenIPC's measurement of cfg80211 + mac80211 + mt7601u as modules, ~250 KB) and the
  ssv6155 driver 130 KB: both assumptions, not measured on a build of this camera.

What the tests prove is the mechanism, not that every real release fits: room is made
first from what the user never sees, the web UI stays, 32 KB stay free, and when the
image does not fit the levers left are named with their measured sizes (a bigger
driver needs --drop-webui, which then fits).
"""
import json
import os

import pytest

from camhost import budget, layout
from test_first_boot import repack_argv, unsquash
from test_repack import (arm_elf, backup_image, build_rootfs, build_uimage, camhost, noise,
                         pack_release, wifi_modules)

CAP = layout.partition("rootfs").size
SPARE = budget.SPARE["rootfs"]
# OpenIPC's infinity6b0 sensor package: every supported sensor's ISP file and driver
SENSORS = ("gc2053", "gc4023", "gc4653", "imx307", "imx335", "jxf37", "jxq03", "os02g10",
           "sc200ai", "sc223a", "sc2335", "sc2336", "sc3336", "sc3338", "sc401ai")
LITE_FREE = (55 * 1024, 65 * 1024)      # what the lite rootfs leaves free


def lite_extra(seed):
    files = {"etc/sensors/%s.bin" % s: noise(6800, seed + i) for i, s in enumerate(SENSORS)}
    files.update({"lib/modules/4.9.84/sigmastar/sensor_%s_mipi.ko" % s:
                  noise(10000, seed + 50 + i) for i, s in enumerate(SENSORS[::2])})
    files.update({"lib/modules/4.9.84/kernel/fs/lockd/lockd.ko": noise(40000, seed + 70),
                  "lib/modules/4.9.84/kernel/fs/nfs_common/grace.ko": noise(10000, seed + 71)})
    return files


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lite")
    filler = 3600000
    for _ in range(4):
        size = os.path.getsize(build_rootfs(tmp, tmp / "rootfs.squashfs", filler, seed=31,
                                            extra=lite_extra(31)))
        if LITE_FREE[0] <= CAP - size < LITE_FREE[1]:
            break
        filler += CAP - 60 * 1024 - size        # incompressible: bytes for bytes
    assert LITE_FREE[0] <= CAP - size < LITE_FREE[1]
    kernel = build_uimage(tmp, tmp / "uImage", size=1900000)
    return {"tmp": tmp, "tgz": pack_release(tmp / "openipc.ssc337-nor-lite.tgz", kernel,
                                            tmp / "rootfs.squashfs"),
            "micropython": arm_elf(tmp / "micropython", size=96577),
            "backup": backup_image(tmp / "backup.bin")}


def drivers(lite, name, driver_size):
    return wifi_modules(lite["tmp"] / name, driver_size=driver_size, mac80211_size=110000)


def test_lite_image_fits_with_the_web_ui_and_32_kb_spare(lite, tmp_path, capsys):
    wifi = drivers(lite, "wifi", 130000)
    out = tmp_path / "lite.bin"
    code = camhost(*repack_argv(lite, out, "--backup", lite["backup"], "--wifi-modules", wifi))
    text = capsys.readouterr().out
    assert code == 0, text
    m = json.loads((tmp_path / "lite.manifest.json").read_text())
    rootfs = next(p for p in m["partitions"] if p["name"] == "rootfs")
    assert rootfs["free"] >= SPARE
    x = unsquash(out.read_bytes(), tmp_path / "x")
    assert (x / "var/www/index.html").exists() and (x / "usr/bin/haserl").exists()  # web UI
    assert sorted(os.listdir(x / "etc/sensors")) == ["sc3336.bin"]       # backup's sensor=
    removed = {c["what"]: c for c in m["changes"] if c["change"] == "removed"}
    assert sorted(removed) == ["slim: nfs", "slim: other-sensors", "slim: vtun"]
    # every sensor's file but sc3336's: 14 ISP files, 7 drivers
    assert removed["slim: other-sensors"]["files"] == (len(SENSORS) - 1) + (len(SENSORS[::2]) - 1)
    for c in removed.values():          # each with its measured size, in the table too
        assert c["squashed_bytes"] > 0
        assert "- %s" % c["what"] in text and "{:+,}".format(-c["squashed_bytes"]) in text
    added = [c["what"] for c in m["changes"] if c["change"] == "added"]
    assert added[:3] == ["wifi: ssv6155.ko (4.9.84)", "wifi: mac80211.ko (4.9.84)",
                         "wifi: ccm.ko (4.9.84)"]


def test_lite_image_that_does_not_fit_lists_the_levers_left(lite, tmp_path, capsys):
    wifi = drivers(lite, "big-wifi", 280000)            # 150 KB more driver
    out = tmp_path / "big.bin"
    code = camhost(*repack_argv(lite, out, "--backup", lite["backup"], "--wifi-modules", wifi))
    err = capsys.readouterr().err
    assert code == 1
    assert "rootfs does not fit" in err and "less 32,768 bytes kept free" in err
    assert "Levers left to make room (measured on this firmware):" in err
    assert "dropping webui (--drop-webui) frees about" in err and "you lose the browser UI" in err
    assert not out.exists() and not (tmp_path / "big.manifest.json").exists()
    # the lever named works: the same inputs fit without the web UI
    code = camhost(*repack_argv(lite, out, "--backup", lite["backup"], "--wifi-modules", wifi,
                                "--drop-webui"))
    assert code == 0, capsys.readouterr()
    m = json.loads((tmp_path / "big.manifest.json").read_text())
    assert "slim: webui" in [c["what"] for c in m["changes"]]
    assert next(p for p in m["partitions"] if p["name"] == "rootfs")["free"] >= SPARE


def test_without_the_backup_the_sensor_lever_is_named_not_guessed(lite, tmp_path, capsys):
    wifi = drivers(lite, "wifi-nb", 130000)
    code = camhost(*repack_argv(lite, tmp_path / "nb.bin", "--wifi-modules", wifi))
    err = capsys.readouterr().err
    assert code == 1
    assert "dropping the other sensors' files (--backup with sensor= in its U-Boot" in err
    assert "frees space; nothing, but which sensor this camera has is not known" in err
