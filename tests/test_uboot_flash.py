"""`camhost backup-uboot` and `camhost flash-uboot`: a real TFTP server on loopback, a
simulated U-Boot on a real pseudo-terminal fetching with a real TFTP client, and its
file-backed 8 MB flash."""
import glob
import hashlib
import io
import json
import os
import shutil
import zlib

import pytest

from camhost import layout
from camhost.backups import BackupStore
from camhost.cli import main
from camhost.errors import camhost_command
from flash_fixtures import chip, firmware, flash_args, read  # noqa: F401
from uboot_sim import free_udp_port, uboot  # noqa: F401


def backup_dir(sim):
    return os.path.join(os.path.dirname(sim.flash_path), "backups")


def flash_uboot(sim, image, *extra):
    return main(["flash-uboot", image, "--port", sim.port, "--timeout", "10",
                 "--server-ip", "127.0.0.1", "--camera-ip", "127.0.0.2",
                 "--tftp-port", str(free_udp_port()), "--backup-dir", backup_dir(sim)]
                + list(extra))


def backup_uboot(sim):
    return main(["backup-uboot", "--port", sim.port, "--timeout", "10",
                 "--backup-dir", backup_dir(sim)])


def store(directory, content_of):
    """Store a copy of the file `content_of` as a backup in `directory`; its path."""
    os.makedirs(directory, exist_ok=True)
    copy = os.path.join(directory, "incoming.bin")
    shutil.copyfile(content_of, copy)
    record, _ = BackupStore(directory).add(copy, "MX25L6433F", "n/a", "test")
    return record.path


@pytest.fixture
def backup(chip):
    """A backup of the chip as it is, where flash_uboot() looks for one."""
    return store(str(chip.parent / "backups"), chip)


def same(a, b, names):
    return all(layout.slice_of(a, n) == layout.slice_of(b, n) for n in names)


def test_flash_uboot_writes_kernel_and_rootfs_only(uboot, chip, firmware, backup, capsys):
    base = read(chip)
    sim = uboot()
    assert flash_uboot(sim, firmware.full) == 0, capsys.readouterr().err
    now, full = read(chip), read(firmware.full)
    assert same(now, full, ["kernel", "rootfs"])
    assert same(now, base, ["boot", "env", "rootfs_data"])  # these differ in the image
    out = capsys.readouterr().out
    assert "the chip holds backup %s" % backup in out
    assert "wrote and verified kernel" in out

    commands = sim.commands
    # the whole chip was compared with the backup before anything else
    assert commands[1:4] == ["sf probe 0", "sf read 0x21000000 0x0 0x800000",
                             "crc32 0x21000000 0x800000"]
    first_erase = next(i for i, c in enumerate(commands) if c.startswith("sf erase"))
    # every file was loaded and CRC-checked before anything was erased
    loads = [c for c in commands[:first_erase] if c.startswith("tftpboot")]
    assert loads == ["tftpboot 0x21050000 kernel.bin", "tftpboot 0x21250000 rootfs.bin"]
    assert "setenv tftpdstp %s" % sim.env["tftpdstp"] in commands
    assert [c for c in commands if c.startswith("sf erase")] == [
        "sf erase 0x50000 0x200000", "sf erase 0x250000 0x500000"]
    # and each partition was read back whole
    assert [c for c in commands[first_erase:] if c.startswith("sf read")] == [
        "sf read 0x21050000 0x50000 0x200000", "sf read 0x21250000 0x250000 0x500000"]


def test_flash_uboot_refuses_without_a_backup_of_the_chip(uboot, chip, firmware, capsys):
    base = read(chip)
    sim = uboot()
    assert flash_uboot(sim, firmware.full) == 1
    err = capsys.readouterr().err
    assert "no backup of an 8 MiB chip in %s: refusing" % backup_dir(sim) in err
    assert "camhost backup-uboot --port %s" % sim.port in err
    assert sim.commands == []  # refused before it even looked for the camera

    other = store(backup_dir(sim), firmware.release)  # a backup, but of other content
    assert flash_uboot(sim, firmware.full) == 1
    err = capsys.readouterr().err
    assert ("none of the 1 backup(s) in %s holds what the chip holds now (CRC32 %08x)"
            % (backup_dir(sim), zlib.crc32(base))) in err
    assert "Nothing was written" in err and "camhost backup-uboot --port" in err
    assert flash_uboot(sim, firmware.full, "--backup", other) == 1
    assert "--backup %s (CRC32 %08x) is not what the chip holds now (CRC32 %08x)" % (
        other, zlib.crc32(read(firmware.release)), zlib.crc32(base)) in capsys.readouterr().err

    # a backup equal to the chip, but its file no longer matches its sidecar
    good = store(backup_dir(sim), chip)
    sidecar = good[:-4] + ".json"
    with open(sidecar) as f:
        meta = json.load(f)
    with open(sidecar, "w") as f:
        json.dump(dict(meta, sha256="0" * 64), f)
    assert flash_uboot(sim, firmware.full) == 1
    assert "backup %s is damaged" % good in capsys.readouterr().err

    assert not [c for c in sim.commands if c.startswith(("tftpboot", "sf erase", "sf write"))]
    assert read(chip) == base


def test_tftp_timeout_stops_before_erasing(uboot, chip, firmware, backup, capsys):
    base = read(chip)
    # a U-Boot without CONFIG_TFTP_PORT ignores tftpdstp and asks port 69
    sim = uboot(honour_tftpdstp=False)
    assert flash_uboot(sim, firmware.release) == 1
    err = capsys.readouterr().err
    assert "`tftpboot 0x21050000 kernel.bin` failed: it timed out" in err
    assert "honours `tftpdstp`" in err
    assert "Retry count exceeded" in err  # U-Boot's own words are shown
    assert not [c for c in sim.commands if c.startswith(("sf erase", "sf write"))]
    assert read(chip) == base


def test_sf_probe_failure_stops_before_erasing(uboot, chip, firmware, backup, capsys):
    base = read(chip)
    sim = uboot(fail="sf probe")
    assert flash_uboot(sim, firmware.release) == 1
    err = capsys.readouterr().err
    assert "`sf probe 0` failed" in err and "Failed to initialize SPI flash at 0:0" in err
    assert read(chip) == base


@pytest.mark.parametrize("failing", ["sf erase", "sf write"])
def test_sf_failure_while_writing_says_what_state_flash_is_in(uboot, chip, firmware, backup,
                                                               capsys, failing):
    base = read(chip)
    sim = uboot(fail=failing)
    assert flash_uboot(sim, firmware.full) == 4
    err = capsys.readouterr().err
    verb = {"sf erase": "Erased", "sf write": "Written"}[failing]
    assert "%s: ERROR" % verb in err
    assert "may be erased or partly written" in err and "U-Boot itself was not touched" in err
    # the restore advice names the backup that equalled the chip before the write
    assert "Before this write the chip held the backup %s" % backup in err
    # runnable as printed: the Python that ran camhost, not a `camhost` on PATH
    assert "`%s`" % camhost_command("restore", backup, "--backup-dir", backup_dir(sim)) in err
    assert same(read(chip), base, ["boot", "env", "rootfs_data"])


@pytest.mark.parametrize("during, code", [("tftpboot", 1), ("sf write", 4)])
def test_serial_port_lost(uboot, chip, firmware, backup, capsys, during, code):
    base = read(chip)
    sim = uboot(unplug=during)
    assert flash_uboot(sim, firmware.full) == code
    err = capsys.readouterr().err
    assert "camhost: error: lost the serial port %s" % sim.port in err
    assert "Traceback" not in err
    if code == 1:  # before erasing: the chip was not touched
        assert read(chip) == base
    else:
        assert "may be erased or partly written" in err and backup in err
        assert same(read(chip), base, ["boot", "env", "rootfs_data"])


def test_bootloader_needs_the_typed_confirmation(uboot, chip, firmware, backup, capsys,
                                                 monkeypatch):
    base = read(chip)
    idle = uboot(mode="silent")
    assert flash_uboot(idle, firmware.full, "--partitions", "boot") == 1
    assert "only with --bootloader" in capsys.readouterr().err

    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
    assert flash_uboot(idle, firmware.full, "--bootloader") == 1
    assert "not confirmed; nothing was written" in capsys.readouterr().err
    assert read(chip) == base

    sim = uboot()
    monkeypatch.setattr("sys.stdin", io.StringIO("overwrite u-boot\n"))
    assert flash_uboot(sim, firmware.full, "--bootloader") == 0, capsys.readouterr().err
    now, full = read(chip), read(firmware.full)
    assert same(now, full, ["boot", "kernel", "rootfs"])
    assert same(now, base, ["env", "rootfs_data"])


def test_bootloader_alone(uboot, chip, firmware, backup, capsys, monkeypatch):
    base = read(chip)
    sim = uboot()
    monkeypatch.setattr("sys.stdin", io.StringIO("overwrite u-boot\n"))
    assert flash_uboot(sim, firmware.full, "--bootloader", "--partitions", "boot") == 0, \
        capsys.readouterr().err
    now = read(chip)
    assert same(now, read(firmware.full), ["boot"])
    assert same(now, base, ["env", "kernel", "rootfs", "rootfs_data"])
    assert [c for c in sim.commands if c.startswith("sf erase")] == ["sf erase 0x0 0x40000"]


def test_image_checks_come_first(uboot, chip, firmware, tmp_path, capsys):
    sim = uboot()
    bad = bytearray(read(firmware.release))
    bad[0x250000:0x250004] = b"XXXX"
    (tmp_path / "bad.bin").write_bytes(bytes(bad))
    assert flash_uboot(sim, str(tmp_path / "bad.bin")) == 1
    assert "not a squashfs filesystem" in capsys.readouterr().err
    assert sim.commands == []


# --- backup-uboot ----------------------------------------------------------------------
def test_backup_uboot_dumps_the_flash_exactly(uboot, chip, firmware, capsys):
    sim = uboot()
    base = read(chip)
    assert backup_uboot(sim) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    [dump] = glob.glob(os.path.join(backup_dir(sim), "*.bin"))
    assert read(dump) == read(chip)
    with open(dump[:-4] + ".json") as f:
        meta = json.load(f)
    assert meta["sha256"] == hashlib.sha256(read(chip)).hexdigest()
    assert (meta["chip"], meta["size"], meta["programmer"], meta["flashrom_version"]) == (
        "MX25L6433F", 8 << 20, "u-boot-serial:" + sim.port, "n/a (U-Boot serial dump)")
    assert "backup saved: %s" % dump in out
    assert "contents: OpenIPC layout" in out
    assert "at 115200 baud that takes about 50 minutes" in err
    assert "dumped 8192 of 8192 KiB (100%)" in err and "left" in err
    # 128 chunks, each printed once and checked with U-Boot's crc32; then read a second time
    dumps = [c for c in sim.commands if c.startswith("md.l")]
    assert len(dumps) == 128 and dumps[1] == "md.l 0x21010000 0x4000"
    assert sim.commands[-2:] == ["sf read 0x21000000 0x0 0x800000",
                                 "crc32 0x21000000 0x800000"]

    # flash-uboot relies on that backup
    assert flash_uboot(sim, firmware.full) == 0, capsys.readouterr().err
    assert "the chip holds backup %s" % dump in capsys.readouterr().out
    assert same(read(chip), read(firmware.full), ["kernel", "rootfs"])

    # so does the flashrom path, although U-Boot and flashrom name the chip differently
    flashrom = flash_args(chip, backup_dir(sim))
    assert main(["restore", dump] + flashrom) == 0, capsys.readouterr().err
    assert read(chip) == base
    assert main(["flash", firmware.agent_change] + flashrom) == 0, capsys.readouterr().err
    assert read(chip) == read(firmware.agent_change)


@pytest.mark.parametrize("damaged", [1, 3])
def test_backup_uboot_reads_a_damaged_chunk_again(uboot, chip, capsys, damaged):
    sim = uboot(corrupt_md=damaged)
    if damaged == 1:
        assert backup_uboot(sim) == 0, capsys.readouterr().err
        [dump] = glob.glob(os.path.join(backup_dir(sim), "*.bin"))
        assert read(dump) == read(chip)
        first = [c for c in sim.commands if c.startswith("md.l 0x21000000 ")]
        assert first == ["md.l 0x21000000 0x4000"] * 2
    else:
        assert backup_uboot(sim) == 1
        err = capsys.readouterr().err
        assert "65536 bytes at 0x21000000 arrived damaged 3 times" in err
        assert "CRC32 differs from U-Boot's" in err
        assert not glob.glob(os.path.join(backup_dir(sim), "*.bin"))
