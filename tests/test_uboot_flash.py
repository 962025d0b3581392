"""`camhost flash-uboot`: a real TFTP server on loopback, a simulated U-Boot on a real
pseudo-terminal fetching with a real TFTP client, and its file-backed 8 MB flash."""
import io

import pytest

from camhost import layout
from camhost.cli import main
from flash_fixtures import chip, firmware, read  # noqa: F401
from uboot_sim import free_udp_port, uboot  # noqa: F401


def flash_uboot(sim, image, *extra):
    return main(["flash-uboot", image, "--port", sim.port, "--timeout", "10",
                 "--server-ip", "127.0.0.1", "--camera-ip", "127.0.0.2",
                 "--tftp-port", str(free_udp_port())] + list(extra))


def same(a, b, names):
    return all(layout.slice_of(a, n) == layout.slice_of(b, n) for n in names)


def test_flash_uboot_writes_kernel_and_rootfs_only(uboot, chip, firmware, capsys):
    base = read(chip)
    sim = uboot()
    assert flash_uboot(sim, firmware.release) == 0, capsys.readouterr().err
    now, release = read(chip), read(firmware.release)
    assert same(now, release, ["kernel", "rootfs"])
    assert same(now, base, ["boot", "env", "rootfs_data"])  # these differ in the image
    assert "wrote and verified kernel" in capsys.readouterr().out

    commands = sim.commands
    first_erase = next(i for i, c in enumerate(commands) if c.startswith("sf erase"))
    # every file was loaded and CRC-checked before anything was erased
    loads = [c for c in commands[:first_erase] if c.startswith("tftpboot")]
    assert loads == ["tftpboot 0x21050000 kernel.bin", "tftpboot 0x21250000 rootfs.bin"]
    assert "setenv tftpdstp %s" % sim.env["tftpdstp"] in commands
    assert [c for c in commands if c.startswith("sf erase")] == [
        "sf erase 0x50000 0x200000", "sf erase 0x250000 0x500000"]
    # and each partition was read back whole
    assert [c for c in commands if c.startswith("sf read")] == [
        "sf read 0x21050000 0x50000 0x200000", "sf read 0x21250000 0x250000 0x500000"]


def test_tftp_timeout_stops_before_erasing(uboot, chip, firmware, capsys):
    base = read(chip)
    # a U-Boot without CONFIG_TFTP_PORT ignores tftpdstp and asks port 69
    sim = uboot(honour_tftpdstp=False)
    assert flash_uboot(sim, firmware.release) == 1
    err = capsys.readouterr().err
    assert "`tftpboot 0x21050000 kernel.bin` failed: it timed out" in err
    assert "honours `tftpdstp`" in err
    assert "Retry count exceeded" in err  # U-Boot's own words are shown
    assert not [c for c in sim.commands if c.startswith("sf")]
    assert read(chip) == base


def test_sf_probe_failure_stops_before_erasing(uboot, chip, firmware, capsys):
    base = read(chip)
    sim = uboot(fail="sf probe")
    assert flash_uboot(sim, firmware.release) == 1
    err = capsys.readouterr().err
    assert "`sf probe 0` failed" in err and "Failed to initialize SPI flash at 0:0" in err
    assert read(chip) == base


@pytest.mark.parametrize("failing", ["sf erase", "sf write"])
def test_sf_failure_while_writing_says_what_state_flash_is_in(uboot, chip, firmware, capsys,
                                                               failing):
    base = read(chip)
    sim = uboot(fail=failing)
    assert flash_uboot(sim, firmware.release) == 4
    err = capsys.readouterr().err
    verb = {"sf erase": "Erased", "sf write": "Written"}[failing]
    assert "%s: ERROR" % verb in err
    assert "may be erased or partly written" in err and "U-Boot itself was not touched" in err
    assert same(read(chip), base, ["boot", "env", "rootfs_data"])


def test_bootloader_needs_the_typed_confirmation(uboot, chip, firmware, capsys, monkeypatch):
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


def test_image_checks_come_first(uboot, chip, firmware, tmp_path, capsys):
    sim = uboot()
    bad = bytearray(read(firmware.release))
    bad[0x250000:0x250004] = b"XXXX"
    (tmp_path / "bad.bin").write_bytes(bytes(bad))
    assert flash_uboot(sim, str(tmp_path / "bad.bin")) == 1
    assert "not a squashfs filesystem" in capsys.readouterr().err
    assert sim.commands == []
