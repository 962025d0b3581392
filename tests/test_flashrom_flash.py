"""`camhost flash|verify|restore` against flashrom's emulated 8 MB chip.

Every write goes through the real flashrom; the assertions read the chip file back,
including the bytes outside the written partitions.
"""
import os
import shlex
import signal
import subprocess
import sys
import time

from camhost import layout
from camhost.cli import main
from flash_fixtures import (chip, dummy_programmer, firmware, flash_args,  # noqa: F401
                            flashrom_wrapper, read, CHIP_NAME)


def partitions_equal(a, b, names):
    return all(layout.slice_of(a, n) == layout.slice_of(b, n) for n in names)


def backup(chip, store):
    assert main(["backup"] + flash_args(chip, store)) == 0


def test_flash_verify_restore_round_trip(chip, firmware, tmp_path, capsys):
    store = tmp_path / "backups"
    base = read(chip)
    backup(chip, store)
    release = read(firmware.release)
    capsys.readouterr()

    argv = ["flash", firmware.release, "--partitions", "kernel,rootfs"] + flash_args(chip, store)
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    now = read(chip)
    assert partitions_equal(now, release, ["kernel", "rootfs"])
    # env and rootfs_data differ in the image but were not selected; boot is the same
    assert partitions_equal(now, base, ["boot", "env", "rootfs_data"])
    assert "differ but not selected by --partitions, not written: env, rootfs_data" in out
    assert "wrote and verified kernel, rootfs (2 region(s)" in out
    assert "programmed 0 block" not in out

    assert main(["verify", firmware.release] + flash_args(chip, store)) == 3
    out = capsys.readouterr().out
    assert "differs from %s in:" % firmware.release in out
    named = [line.split()[0] for line in out.splitlines()[1:]]
    assert named == ["env", "rootfs_data"]

    # flashing again needs a backup of what the chip holds now
    assert main(["flash", firmware.full] + flash_args(chip, store)) == 1
    assert "no backup in %s matches the chip now" % store in capsys.readouterr().err
    assert read(chip) == now

    [saved] = [os.path.join(store, n) for n in os.listdir(store) if n.endswith(".bin")]
    assert main(["restore", saved] + flash_args(chip, store)) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert read(chip) == base
    # the content it replaced was saved first, so it too can come back
    assert "current content saved as" in out
    assert len([n for n in os.listdir(store) if n.endswith(".bin")]) == 2
    assert "wrote and verified kernel, rootfs (2 region(s)" in out

    assert main(["verify", saved] + flash_args(chip, store)) == 0
    assert "the chip matches" in capsys.readouterr().out


def test_agent_change_dry_run_then_write(chip, firmware, tmp_path, capsys, flashrom_wrapper):
    store = tmp_path / "backups"
    base = read(chip)
    backup(chip, store)
    wrapper = flashrom_wrapper()
    capsys.readouterr()

    # the chip already holds this image: nothing to do, nothing written
    assert main(["flash", firmware.base] + flash_args(chip, store)) == 0
    assert "nothing to write" in capsys.readouterr().out

    argv = ["flash", firmware.agent_change] + flash_args(chip, store)
    assert main(argv + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "plan: write 1 partition(s)" in out and "rootfs       0x250000-0x74ffff" in out
    assert "unchanged, not written: boot, env, kernel, rootfs_data" in out
    command = [l for l in out.splitlines() if l.startswith("flashrom command: ")][0]
    assert "-i rootfs -N --flash-contents" in command and "-i kernel" not in command
    assert "dry run: nothing was written" in out
    assert read(chip) == base

    assert main(argv) == 0
    out = capsys.readouterr().out
    assert read(chip) == read(firmware.agent_change)
    assert partitions_equal(read(chip), base, ["boot", "env", "kernel", "rootfs_data"])
    assert "wrote and verified rootfs (1 region(s), 5120 KiB)" in out
    # the dry run printed the flashrom command the write ran, up to the file names
    [written] = [c for c in wrapper.calls() if "-w" in c]
    printed = shlex.split(command[len("flashrom command: "):])[1:]
    files = ("-l", "--flash-contents", "-w")
    assert [a for i, a in enumerate(printed) if printed[i - 1] not in files] == \
        [a for i, a in enumerate(written) if written[i - 1] not in files]


def test_flash_relies_on_the_backup_that_equals_the_chip(chip, firmware, tmp_path, capsys):
    store = tmp_path / "backups"
    base = read(chip)
    backup(chip, store)
    [saved] = [os.path.join(store, n) for n in os.listdir(store) if n.endswith(".bin")]
    assert main(["flash", firmware.release] + flash_args(chip, store)) == 0

    # restore saves the release first (a newer backup), then puts the old content back:
    # flashing next needs no new backup
    assert main(["restore", saved] + flash_args(chip, store)) == 0
    assert read(chip) == base
    capsys.readouterr()
    assert main(["flash", firmware.agent_change] + flash_args(chip, store)) == 0, \
        capsys.readouterr().err
    assert read(chip) == read(firmware.agent_change)

    # the chip changes behind camhost's back (the camera wrote its overlay)
    chip.write_bytes(base[:0x760000] + b"\x85" * (layout.FLASH_SIZE - 0x760000))
    capsys.readouterr()
    assert main(["flash", firmware.release] + flash_args(chip, store)) == 1
    assert "no backup in %s matches the chip now" % store in capsys.readouterr().err
    assert main(["backup"] + flash_args(chip, store)) == 0
    assert main(["flash", firmware.release] + flash_args(chip, store)) == 0, \
        capsys.readouterr().err
    assert read(chip) == read(firmware.release)
    assert sorted(n for n in os.listdir(store) if not n.endswith((".bin", ".json"))) == []


def test_two_cameras_sharing_a_backup_dir(firmware, tmp_path, capsys):
    store = tmp_path / "backups"
    one, two = tmp_path / "one.bin", tmp_path / "two.bin"
    one.write_bytes(read(firmware.base))
    two.write_bytes(read(firmware.release))
    for first, second in ((one, two), (two, one)):
        backup(first, store)
        backup(second, store)
        # each camera finds its own backup, whichever was made last
        for camera in (first, second):
            assert main(["flash", firmware.agent_change] + flash_args(camera, store)) == 0, \
                capsys.readouterr().err
            assert read(camera) == read(firmware.agent_change)
        one.write_bytes(read(firmware.base))
        two.write_bytes(read(firmware.full))


def test_flash_refusals_leave_the_chip_alone(chip, firmware, tmp_path, capsys):
    store = tmp_path / "backups"
    base = read(chip)
    args = flash_args(chip, store)

    # no backup yet
    assert main(["flash", firmware.release] + args) == 1
    assert "no backup in %s matches the chip now (%s, sha256 " % (store, CHIP_NAME) \
        in capsys.readouterr().err

    # wrong size, corrupt kernel: refused before flashrom is asked anything
    short = tmp_path / "short.bin"
    short.write_bytes(read(firmware.release)[:4 << 20])
    assert main(["flash", str(short)] + args) == 1
    assert "exactly 8388608 bytes" in capsys.readouterr().err
    big = tmp_path / "big.bin"
    big.write_bytes(read(firmware.release) + b"\xff")
    assert main(["restore", str(big)] + args) == 1
    assert "backup %s is more than 8388608 bytes" % big in capsys.readouterr().err
    bad = bytearray(read(firmware.release))
    bad[0x50000 + 64 + 1000] ^= 1
    (tmp_path / "bad.bin").write_bytes(bytes(bad))
    assert main(["flash", str(tmp_path / "bad.bin")] + args) == 1
    err = capsys.readouterr().err
    assert "does not look like firmware" in err and "data CRC mismatch" in err
    assert main(["flash", firmware.release, "--partitions", "kernel,apps"] + args) == 1
    assert "unknown partition(s) apps" in capsys.readouterr().err

    # a --backup that is not what the chip holds
    assert main(["flash", firmware.release, "--backup", firmware.full] + args) == 1
    assert "does not match the chip now" in capsys.readouterr().err
    assert read(chip) == base


def test_write_killed_midway_prints_a_restore_command_that_works(chip, firmware, tmp_path,
                                                                 capsys, flashrom_wrapper):
    store = tmp_path / "backups"
    base = read(chip)
    backup(chip, store)
    marker = tmp_path / "kill-next-write"
    marker.write_bytes(b"")
    flashrom_wrapper(kill_write_marker=str(marker))
    capsys.readouterr()

    assert main(["flash", firmware.release] + flash_args(chip, store)) == 4
    err = capsys.readouterr().err
    assert "flashrom was killed by signal 9 while writing" in err
    assert "THE CHIP STATE IS UNKNOWN" in err
    assert read(chip) != base
    command = err.split("restore the verified backup now with:\n")[1].strip().splitlines()[0]
    argv = shlex.split(command)
    assert argv[:4] == [sys.executable, "-m", "camhost", "restore"]

    # run as printed, from another directory: no `camhost` on PATH needed
    restore = subprocess.run(argv, cwd=str(tmp_path), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    assert restore.returncode == 0, restore.stderr.decode()
    assert read(chip) == base


def test_write_failing_midway_says_the_state_is_unknown(chip, firmware, tmp_path, capsys):
    store = tmp_path / "backups"
    backup(chip, store)
    capsys.readouterr()
    # the dummy programmer refuses page-program (0x02): erasing works, writing fails
    programmer = dummy_programmer(chip) + ",spi_blacklist=02"
    argv = ["flash", firmware.release, "--programmer", programmer, "--chip", CHIP_NAME,
            "--backup-dir", str(store)]
    assert main(argv) == 4
    err = capsys.readouterr().err
    assert "flashrom failed (exit 2) while writing" in err
    assert "THE CHIP STATE IS UNKNOWN" in err and "camhost restore" in err


def test_write_that_does_not_verify(chip, firmware, tmp_path, capsys):
    store = tmp_path / "backups"
    backup(chip, store)
    capsys.readouterr()
    # the emulated chip ignores page-program: flashrom's verify catches it
    programmer = dummy_programmer(chip) + ",spi_ignorelist=02"
    argv = ["flash", firmware.agent_change, "--programmer", programmer, "--chip", CHIP_NAME,
            "--backup-dir", str(store)]
    assert main(argv) == 4
    err = capsys.readouterr().err
    assert "the written data did not verify" in err and "camhost restore" in err


def expected_blocks(old, new, block=4096):
    """(erased, programmed, unchanged) 4 KiB blocks for old -> new, by NOR rules: a block
    is erased when a bit must go 0 -> 1, programmed when it must end up not all 0xff."""
    erased = programmed = unchanged = 0
    for at in range(0, len(old), block):
        a, b = old[at:at + block], new[at:at + block]
        if a == b:
            unchanged += 1
            continue
        if (~int.from_bytes(a, "big") & int.from_bytes(b, "big")) != 0:
            erased += 1
        if b != b"\xff" * block:
            programmed += 1
    return erased, programmed, unchanged


def test_write_report_counts_what_flashrom_did(chip, firmware, tmp_path):
    from camhost.flashcmds import flash_image
    from camhost.flashrom import Flashrom, Progress

    base = read(chip)
    reference = tmp_path / "reference.bin"  # what the chip holds: a verified backup
    reference.write_bytes(base)
    with open(os.devnull, "w") as quiet:
        fr = Flashrom(dummy_programmer(chip), CHIP_NAME, progress=Progress(quiet))
        fr.preflight()
        assert fr.verify(str(reference))
        unchanged = flash_image(fr, firmware.base, str(reference), "(restore)")
        report = flash_image(fr, firmware.full, str(reference), "(restore)")
    assert unchanged.regions == () and unchanged.bytes_written == 0
    full = read(firmware.full)
    assert read(chip) == full
    assert [r.name for r in report.regions] == [p.name for p in layout.PARTITIONS]
    expected = expected_blocks(base, full)
    assert (report.blocks_erased, report.blocks_written, report.blocks_skipped) == expected
    assert report.bytes_written == expected[1] * 4096


def test_restore_onto_an_erased_chip(chip, tmp_path, capsys):
    store = tmp_path / "backups"
    base = read(chip)
    backup(chip, store)
    [saved] = [os.path.join(store, n) for n in os.listdir(store) if n.endswith(".bin")]
    chip.write_bytes(b"\xff" * layout.FLASH_SIZE)  # what an interrupted chip erase leaves
    capsys.readouterr()
    assert main(["restore", saved] + flash_args(chip, store)) == 0, capsys.readouterr().err
    assert read(chip) == base
    err = capsys.readouterr().err
    assert "read chip again (it read blank)" in err
    assert "reads as all 0xff: nothing on it to save" in err
    assert len([n for n in os.listdir(store) if n.endswith(".bin")]) == 1


def test_restore_trusts_no_single_blank_read(chip, firmware, tmp_path, capsys, flashrom_wrapper):
    store = tmp_path / "backups"
    backup(chip, store)
    [saved] = [os.path.join(store, n) for n in os.listdir(store) if n.endswith(".bin")]
    chip.write_bytes(read(firmware.release))  # not backed up: it must not be lost
    marker = tmp_path / "blank-next-read"
    marker.write_bytes(b"")
    flashrom_wrapper(blank_read_marker=str(marker))
    capsys.readouterr()
    assert main(["restore", saved] + flash_args(chip, store)) == 1
    assert "two reads of the chip differ" in capsys.readouterr().err
    assert read(chip) == read(firmware.release)


def test_flashrom_writes_the_bytes_that_were_checked(chip, firmware, tmp_path, capsys,
                                                     flashrom_wrapper):
    store = tmp_path / "backups"
    backup(chip, store)
    [saved] = [os.path.join(store, n) for n in os.listdir(store) if n.endswith(".bin")]
    # IMAGE and BACKUP are replaced by the full image while the chip is read
    image = tmp_path / "image.bin"
    image.write_bytes(read(firmware.agent_change))
    flashrom_wrapper(replace_during_read=[str(image), firmware.full])
    assert main(["flash", str(image)] + flash_args(chip, store)) == 0, capsys.readouterr().err
    assert read(chip) == read(firmware.agent_change)

    copy = tmp_path / "backup-copy.bin"
    copy.write_bytes(read(saved))
    flashrom_wrapper(replace_during_read=[str(copy), firmware.full])
    assert main(["restore", str(copy)] + flash_args(chip, store)) == 0, capsys.readouterr().err
    assert read(chip) == read(saved)

    # --backup: what flashrom verified is what the plan and --flash-contents rely on
    copy.write_bytes(read(saved))
    capsys.readouterr()
    assert main(["flash", firmware.agent_change, "--backup", str(copy)]
                + flash_args(chip, store)) == 0, capsys.readouterr().err
    assert "wrote and verified rootfs (1 region(s)" in capsys.readouterr().out
    assert read(chip) == read(firmware.agent_change)


def test_ctrl_c_during_a_write_warns_then_stops_with_the_restore_command(chip, firmware,
                                                                          tmp_path):
    store = tmp_path / "backups"
    backup(chip, store)
    # a user at a terminal: Ctrl-C sends SIGINT to camhost's whole process group
    camhost = subprocess.Popen([sys.executable, "-m", "camhost", "flash", firmware.full]
                               + flash_args(chip, store), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not flashrom_child_writing(camhost.pid):
            assert time.monotonic() < deadline and camhost.poll() is None
            time.sleep(0.02)
        os.killpg(camhost.pid, signal.SIGINT)
        time.sleep(0.1)
        os.killpg(camhost.pid, signal.SIGINT)
        _, err = camhost.communicate(timeout=30)
    finally:
        camhost.kill()
        camhost.wait()
    err = err.decode()
    assert camhost.returncode == 4, err
    assert "Press Ctrl-C again to stop anyway" in err
    assert "flashrom was killed by signal 9 while writing" in err
    assert "THE CHIP STATE IS UNKNOWN" in err and "camhost restore" in err


def flashrom_child_writing(parent):
    """Whether `parent` has a flashrom child running with -w."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/stat" % pid) as f:
                stat = f.read()
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"-w" in argv and argv[0].endswith(b"flashrom"):
            return True
    return False
