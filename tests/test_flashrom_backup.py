"""`camhost backup` and the flashrom preflight, against flashrom's emulated 8 MB chip."""
import datetime
import glob
import hashlib
import json
import os
import re

from camhost import layout, tools
from camhost.cli import main
from flash_fixtures import (CHIP_NAME, chip, dummy_programmer, firmware, flash_args,  # noqa: F401
                            flashrom_wrapper, read)


def backups_in(directory):
    return sorted(glob.glob(os.path.join(str(directory), "*.bin")))


def backup_name(digest):
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    return "%s-MX25L6436E-%s.bin" % (today, digest[:12])


def test_backup_stores_a_verified_dump_and_never_overwrites(chip, tmp_path, capsys):
    store = tmp_path / "backups"
    assert main(["backup"] + flash_args(chip, store)) == 0
    out = capsys.readouterr().out
    [path] = backups_in(store)
    digest = hashlib.sha256(read(chip)).hexdigest()
    assert os.path.basename(path) == backup_name(digest)
    assert read(path) == read(chip)
    with open(path[:-4] + ".json") as f:
        meta = json.load(f)
    assert meta["sha256"] == digest
    assert meta["chip"] == CHIP_NAME
    assert meta["size"] == layout.FLASH_SIZE
    assert meta["flashrom_version"]
    assert datetime.datetime.fromisoformat(meta["time"]).tzinfo is not None
    # it says what the dump holds
    assert "OpenIPC layout" in out
    assert "U-Boot 2015.01" in out and "Linux-4.9.84" in out and "squashfs 4.0, xz" in out

    # the same content again: reported, nothing rewritten
    before = os.stat(path)
    assert main(["backup"] + flash_args(chip, store)) == 0
    assert "already backed up" in capsys.readouterr().out
    assert backups_in(store) == [path]
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns

    # a foreign file where the next backup would go is left alone
    data = bytearray(read(chip))
    data[0x760000] ^= 0xFF
    chip.write_bytes(bytes(data))
    squatter = str(store / backup_name(hashlib.sha256(bytes(data)).hexdigest()))
    with open(squatter, "wb") as f:
        f.write(b"not mine")
    assert main(["backup"] + flash_args(chip, store)) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "untouched" in err
    assert read(squatter) == b"not mine"
    assert not os.path.exists(squatter[:-4] + ".json")


def test_backup_refuses_when_the_two_reads_differ(chip, tmp_path, capsys, flashrom_wrapper):
    flashrom_wrapper(change_after_read=True)
    store = tmp_path / "backups"
    assert main(["backup"] + flash_args(chip, store)) == 1
    err = capsys.readouterr().err
    assert "two reads of the chip differ, in rootfs_data (1 bytes)" in err
    assert "lower the i2c clock" in err and "short wires" in err
    assert backups_in(store) == []


def test_backup_refuses_a_chip_that_reads_blank(tmp_path, capsys):
    blank = tmp_path / "chip.bin"
    blank.write_bytes(b"\xff" * layout.FLASH_SIZE)
    assert main(["backup"] + flash_args(blank, tmp_path / "backups")) == 1
    assert "reads as all 0xff" in capsys.readouterr().err
    assert backups_in(tmp_path / "backups") == []
    assert not os.path.exists(tmp_path / "backups")   # no empty directory left behind


def test_programmer_missing_from_flashrom_help(chip, tmp_path, capsys, flashrom_wrapper):
    wrapper = flashrom_wrapper(help_hide=["mstarddc_spi"])
    assert main(["backup", "--backup-dir", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "built without the mstarddc_spi programmer" in err
    assert "meson setup build -Dprogrammer=auto,mstarddc_spi" in err
    # the help text is all it asked: nothing touched a chip
    assert wrapper.calls() == [["--help"]]

    wrapper = flashrom_wrapper(help_hide=["dummy"])
    assert main(["backup"] + flash_args(chip, tmp_path / "b")) == 1
    assert "built without the dummy programmer" in capsys.readouterr().err


def test_device_node_checked_before_flashrom_runs(tmp_path, capsys, flashrom_wrapper):
    wrapper = flashrom_wrapper(help_add=["mstarddc_spi"])
    missing = tmp_path / "i2c-7"
    programmer = "mstarddc_spi:dev=%s:0x49" % missing
    assert main(["backup", "--programmer", programmer, "--backup-dir", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "device node %s does not exist" % missing in err
    assert "modprobe i2c-dev" in err
    assert wrapper.calls() == [["--help"]]


def test_mstarddc_session_keeps_the_soc_halted_until_the_end(chip, tmp_path, capsys,
                                                            flashrom_wrapper):
    node = tmp_path / "i2c-1"
    node.write_bytes(b"")
    wrapper = flashrom_wrapper(help_add=["mstarddc_spi"], mstarddc_chip=str(chip))
    programmer = "mstarddc_spi:dev=%s:0x49" % node
    argv = ["backup", "--programmer", programmer, "--chip", CHIP_NAME,
            "--backup-dir", str(tmp_path / "b")]
    assert main(argv) == 0, capsys.readouterr().err
    assert len(backups_in(tmp_path / "b")) == 1
    runs = [c for c in wrapper.calls() if "-p" in c]
    programmers = [c[c.index("-p") + 1] for c in runs]
    # probe and both reads with noreset=1; then one plain run resets the SoC
    assert programmers[:-1] == [programmer + ",noreset=1"] * 3
    assert [c for c in runs[:-1] if "-r" in c] == runs[1:3]
    assert programmers[-1] == programmer and "-r" not in runs[-1]


def test_mstarddc_session_releases_the_soc_after_ctrl_c(chip, tmp_path, capsys,
                                                        flashrom_wrapper):
    node = tmp_path / "i2c-1"
    node.write_bytes(b"")
    wrapper = flashrom_wrapper(help_add=["mstarddc_spi"], mstarddc_chip=str(chip),
                               interrupt_read=True)
    programmer = "mstarddc_spi:dev=%s:0x49" % node
    argv = ["backup", "--programmer", programmer, "--chip", CHIP_NAME,
            "--backup-dir", str(tmp_path / "b")]
    assert main(argv) == 130, capsys.readouterr().err
    assert backups_in(tmp_path / "b") == []
    runs = [c for c in wrapper.calls() if "-p" in c]
    # the read was interrupted; the plain run that resets the SoC still came
    assert "-r" in runs[-2]
    assert runs[-1][runs[-1].index("-p") + 1] == programmer and "-r" not in runs[-1]


def test_several_chip_definitions_ask_for_chip(chip, tmp_path, capsys):
    argv = ["backup", "--programmer", dummy_programmer(chip), "--backup-dir", str(tmp_path / "b")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "several chip definitions match" in err
    assert "--chip MX25L6405D" in err
    assert "--chip %s" % CHIP_NAME in err
    assert backups_in(tmp_path / "b") == []


def test_refuses_a_chip_that_is_not_8_mib(tmp_path, capsys):
    small = tmp_path / "chip4.bin"
    small.write_bytes(b"\x00" * (4 << 20))
    argv = ["backup", "--programmer", "dummy:emulate=SST25VF032B,image=%s" % small,
            "--backup-dir", str(tmp_path / "b")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert re.search(r"SST25VF032B is 4096 KiB, but this camera has an 8 MiB", err)


def test_flashrom_not_installed(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(tools, "SBIN_DIRS", ())
    assert main(["backup", "--backup-dir", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "flashrom is not installed" in err and "mstarddc_spi" in err
