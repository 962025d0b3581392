"""The env partition writer against the real tools: u-boot-tools' mkenvimage writes the
backup and our output, libubootenv's fw_printenv (what OpenIPC runs) reads them back."""
import os
import subprocess
import zlib

import pytest

from camhost import layout, ubootenv
from camhost.errors import CamhostError

ENV_SIZE = layout.partition("env").size
# What a stock IMOU U-Boot / OpenIPC environment holds, the parts the camera needs to boot.
BACKUP_VARS = (
    ("bootcmd", "sf probe 0; sf read 0x21000000 0x50000 0x200000; bootm 0x21000000"),
    ("bootargs", "console=ttyS0,115200 root=/dev/mtdblock3 rootfstype=squashfs "
                 "mtdparts=NOR_FLASH:256k(boot),64k(env),2048k(kernel),5120k(rootfs),"
                 "-(rootfs_data)"),
    ("ethaddr", "00:12:41:aa:bb:cc"),
    ("soc", "ssc337"),
    ("sensor", "sc3336"),
    ("baudrate", "115200"),
)


def mkenvimage(tmp_path, pairs, size=ENV_SIZE):
    text = tmp_path / "backup-env.txt"
    text.write_text("".join("%s=%s\n" % kv for kv in pairs))
    out = tmp_path / "backup-env.bin"
    subprocess.run(["mkenvimage", "-s", str(size), "-o", str(out), str(text)], check=True)
    return out.read_bytes()


def fw_printenv(tmp_path, blob, *args):
    image = tmp_path / "check-env.bin"
    image.write_bytes(blob)
    config = tmp_path / "fw_env.config"
    config.write_text("%s 0x0 0x%x\n" % (image, len(blob)))
    return subprocess.run(["fw_printenv", "-c", str(config)] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_parse_reads_what_mkenvimage_wrote(tmp_path):
    blob = mkenvimage(tmp_path, BACKUP_VARS)
    assert list(ubootenv.parse(blob).items()) == list(BACKUP_VARS)


def test_update_keeps_the_backups_variables_and_fw_printenv_reads_it(tmp_path):
    backup = mkenvimage(tmp_path, BACKUP_VARS)
    changes = {"wlandev": "ssv6155-ssc337-imou-ranger-rc", "wlanssid": "Home net 5",
               "wlanpass": "p@ss word=with;odd$chars"}
    new = ubootenv.update(backup, changes, workdir=str(tmp_path))
    assert len(new) == ENV_SIZE
    out = fw_printenv(tmp_path, new)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert sorted(lines) == sorted("%s=%s" % kv for kv in BACKUP_VARS + tuple(changes.items()))
    for key, value in changes.items():
        got = fw_printenv(tmp_path, new, "-n", key).stdout.decode().rstrip("\n")
        assert got == value


def test_update_replaces_an_existing_value_in_place(tmp_path):
    backup = mkenvimage(tmp_path, BACKUP_VARS + (("wlanssid", "old"),))
    new = ubootenv.update(backup, {"wlanssid": "new"}, workdir=str(tmp_path))
    variables = ubootenv.parse(new)
    assert variables["wlanssid"] == "new"
    assert list(variables)[:len(BACKUP_VARS)] == [k for k, _ in BACKUP_VARS]


def test_crc_is_what_fw_printenv_checks(tmp_path):
    new = bytearray(ubootenv.update(mkenvimage(tmp_path, BACKUP_VARS), {"wlanssid": "x"},
                                    workdir=str(tmp_path)))
    assert fw_printenv(tmp_path, bytes(new)).returncode == 0
    new[20] ^= 0x01                             # one bit flipped in the variables
    assert fw_printenv(tmp_path, bytes(new)).returncode != 0
    with pytest.raises(CamhostError, match="bad CRC"):
        ubootenv.parse(bytes(new), "--backup env")


def test_erased_env_is_refused_not_replaced(tmp_path):
    # Writing only the wifi settings would drop bootcmd: the camera would not boot.
    with pytest.raises(CamhostError, match="erased"):
        ubootenv.update(b"\xff" * ENV_SIZE, {"wlanssid": "x"})


@pytest.mark.parametrize("value", ["two\nlines", "nul\0byte", "cr\rhere"])
def test_values_the_environment_cannot_hold_are_refused(tmp_path, value):
    backup = mkenvimage(tmp_path, BACKUP_VARS)
    with pytest.raises(CamhostError, match="wlanpass") as e:
        ubootenv.update(backup, {"wlanpass": value})
    assert value not in str(e.value)


def test_environment_too_full_fails_without_repeating_the_secret(tmp_path):
    backup = mkenvimage(tmp_path, BACKUP_VARS, size=1024)
    secret = "s3cret-" + "x" * 2000
    with pytest.raises(CamhostError) as e:
        ubootenv.update(backup, {"wlanpass": secret}, workdir=str(tmp_path))
    assert "mkenvimage" in str(e.value)
    assert secret[:12] not in str(e.value)


def test_crc_layout_matches_u_boot(tmp_path):
    """CRC32 of everything after the 4 CRC bytes, little-endian, 0xFF padding."""
    blob = ubootenv.build({"a": "1"}, 256)
    assert blob[4:9] == b"a=1\0\0"
    assert blob[9:] == b"\xff" * (256 - 9)
    assert int.from_bytes(blob[:4], "little") == zlib.crc32(blob[4:])
