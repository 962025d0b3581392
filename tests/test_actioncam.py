"""camhost actioncam: wire format, session and CLI against the simulated action camera."""
import os
import socket
import struct
import threading
import time

import pytest

from camhost import actioncam, cli
from camhost import actioncam_wire as wire
from camhost.errors import CamhostError
from camhost.simactioncam import SimActionCam, make_files

BOUND_S = 20


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cam(tmp_path):
    files = make_files(str(tmp_path / "sd"), count=12, size=40000)
    sim = SimActionCam(files_dir=files, alive_interval_s=0.2, file_list_part_size=200)
    with sim:
        yield sim


def run_cli(sim, *argv):
    return cli.main(["actioncam", "--host", "127.0.0.1", "--control-port", str(sim.control_port),
                     "--http-port", str(sim.http_port), "--timeout", "2"] + list(argv))


# --- wire format ------------------------------------------------------------------------
def test_build_matches_the_documented_still_bytes():
    assert wire.build(wire.STILL) == bytes.fromhex("ABCD00000000A038")


def test_header_errors_are_specific():
    with pytest.raises(wire.WireError, match="truncated header: 5 of 8"):
        wire.parse_header(b"\xab\xcd\x00\x00\x00")
    with pytest.raises(wire.WireError, match="wrong magic 0x1234"):
        wire.parse_header(b"\x12\x34" + b"\0" * 6)
    with pytest.raises(wire.WireError, match="length 9 is larger than the 2"):
        wire.parse(wire.HEADER.pack(0xABCD, 9, wire.FIRMWARE) + b"ab")
    with pytest.raises(wire.WireError, match="over the protocol"):
        wire.build(wire.STILL, b"x" * 70000)


def test_login_firmware_and_file_list_round_trip():
    assert wire.parse_login(wire.login_payload("admin", "12345")) == ("admin", "12345")
    assert len(wire.login_payload()) == 128
    with pytest.raises(wire.WireError, match="user name must be under 64"):
        wire.login_payload("x" * 64)
    fw = wire.firmware_payload("v1.0 rc5")
    assert len(fw) == 112 and wire.parse_firmware(fw) == "v1.0 rc5"
    entries = [("/DCIM/MOVIE/%d.MOV" % i, i * 1000) for i in range(40)]
    parts = wire.file_list_parts(entries, 100)
    assert len(parts) > 3
    text = b"".join(wire.parse_file_list_part(p)[2] for p in parts)
    assert wire.parse_file_list(text) == entries
    with pytest.raises(wire.WireError, match="is not path:size"):
        wire.parse_file_list(b"/a.MOV:12;/b.MOV;")
    with pytest.raises(wire.WireError, match="part 3 of 2 does not exist"):
        wire.parse_file_list_part(struct.pack("<II", 2, 3))


def test_preview_packets_and_assembler_skip_bad_input():
    grams = [wire.build_preview(0, wire.VIDEO, b"\0\0\0\1\x65abc"),
             wire.build_preview(1, 9, b"garbage") + wire.build_preview(2, wire.VIDEO, b"def"),
             b"\xde\xad" + b"\0" * 10,
             wire.PREVIEW_HEADER.pack(wire.PREVIEW_MAGIC, 900, 3, 1) + b"x",
             b"\xbc\xde\x00",
             wire.build_preview(3, wire.TIME, wire.time_payload(40)),
             wire.build_preview(4, wire.VIDEO, b"\0\0\0\1\x41g"),
             wire.build_preview(5, wire.TIME, wire.time_payload(80))]
    with pytest.raises(wire.WireError, match="length 900 is larger than the 1 bytes"):
        wire.parse_preview(grams[3])
    with pytest.raises(wire.WireError, match="truncated preview header"):
        wire.parse_preview(grams[4])
    asm = wire.FrameAssembler()
    out = [f for g in grams for f in asm.feed(g)]
    assert out == [(40 * 90, b"\0\0\0\1\x65abcdef"), (80 * 90, b"\0\0\0\1\x41g")]
    assert (asm.bad, asm.unknown) == (3, 1)
    assert "length 900" in asm.last_error or "truncated" in asm.last_error


@pytest.mark.parametrize("step, ticks_per_unit", [(40, 90), (3600, 1)])
def test_assembler_reads_the_time_unit_from_the_first_step(step, ticks_per_unit):
    asm = wire.FrameAssembler()
    out = []
    for n in range(4):
        out += asm.feed(wire.build_preview(2 * n, wire.VIDEO, b"f%d" % n) +
                        wire.build_preview(2 * n + 1, wire.TIME, wire.time_payload(1000 + n * step)))
    assert asm.ticks_per_unit == ticks_per_unit
    assert [unit for _, unit in out] == [b"f0", b"f1", b"f2", b"f3"]
    assert [b - a for (a, _), (b, _) in zip(out, out[1:])] == [3600] * 3


# --- discovery and commands ---------------------------------------------------------------
def test_discover_finds_the_simulator_on_either_port(cam, capsys):
    bind = free_udp_port()
    host, port = actioncam.discover("127.0.0.1", cam.discovery_ports, bind, timeout=5)
    assert host == "127.0.0.1" and port in cam.discovery_ports
    assert run_cli(cam, "discover", "--broadcast", "127.0.0.1", "--bind-port", str(free_udp_port()),
                   "--discovery-ports", "%d,%d" % (free_udp_port(), cam.discovery_ports[1])) == 0
    assert "127.0.0.1 (answered on port %d)" % cam.discovery_ports[1] in capsys.readouterr().out


def test_discover_times_out_with_a_hint():
    t0 = time.monotonic()
    with pytest.raises(actioncam.CameraTimeout, match="no camera answered discovery"):
        actioncam.discover("127.0.0.1", (free_udp_port(),), free_udp_port(), timeout=0.6)
    assert time.monotonic() - t0 < BOUND_S


def test_every_command_round_trips(cam, capsys):
    with actioncam.ActionCam("127.0.0.1", cam.control_port, timeout=2) as c:
        assert c.firmware() == "v1.0 rc5"
        c.still()
        c.record(True)
        assert cam.recording is True
        c.record(False)
        assert cam.recording is False
        files = c.files()
        assert files == cam.file_entries() and len(files) == 12
        answers = c.raw(wire.FIRMWARE_REQUEST, b"", wait_s=0.5)
        assert [t for t, _ in answers] == [wire.FIRMWARE]
        time.sleep(0.5)
        assert c.alive_answered >= 1 and cam.alive_answered >= 1
    assert cam.stills == 1
    assert cam.logins == 1
    # the file list really came in several parts
    assert len(wire.file_list_parts(cam.file_entries(), cam.part_size)) >= 3
    for argv, expect in ((["info"], "firmware v1.0 rc5"), (["still"], "still taken"),
                         (["record", "start"], "recording started"),
                         (["files"], "/DCIM/MOVIE/2026_0101_000012.MOV"),
                         (["raw", "0xA034"], "0xA035 firmware information: 00 00")):
        assert run_cli(cam, *argv) == 0
        assert expect in capsys.readouterr().out
    assert cam.recording is True and cam.stills == 2


def test_download_verifies_size_and_resumes(cam, tmp_path, capsys):
    out = tmp_path / "got"
    assert run_cli(cam, "download", "/DCIM/MOVIE/2026_0101_000003.MOV", "--to", str(out)) == 0
    local = cam.files["/DCIM/MOVIE/2026_0101_000003.MOV"]
    assert (out / "2026_0101_000003.MOV").read_bytes() == open(local, "rb").read()
    # a partial file is resumed with Range: only the missing bytes cross the wire
    data = open(cam.files["/DCIM/MOVIE/2026_0101_000005.MOV"], "rb").read()
    part = out / "2026_0101_000005.MOV"
    part.write_bytes(data[:10000])
    before = cam.http.bytes_served
    assert run_cli(cam, "download", "--all", "--to", str(out)) == 0
    assert part.read_bytes() == data
    assert len(os.listdir(str(out))) == 12
    total = sum(size for _, size in cam.file_entries())
    assert cam.http.bytes_served - before == total - os.path.getsize(local) - 10000


def test_download_reports_a_short_file(cam, tmp_path):
    url = "http://127.0.0.1:%d/DCIM/MOVIE/2026_0101_000001.MOV" % cam.http_port
    with pytest.raises(actioncam.CameraError, match="ended at .* of 999999 bytes; run it again"):
        actioncam.download(url, str(tmp_path / "f"), size=999999)
    with pytest.raises(actioncam.CameraError, match="HTTP 404"):
        actioncam.download(url + "x", str(tmp_path / "g"), size=1)


def test_bad_user_input_gives_clear_errors(cam, capsys):
    assert run_cli(cam, "raw", "banana") == 2
    assert "is not a number" in capsys.readouterr().err
    assert run_cli(cam, "raw", "0xA034", "zz") == 2
    assert "is not hex" in capsys.readouterr().err
    assert run_cli(cam, "download") == 2
    assert "give one PATH" in capsys.readouterr().err
    assert run_cli(cam, "download", "/nope.MOV") == 1
    assert "is not on the camera" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli(cam, "record", "maybe")


@pytest.mark.parametrize("fault, message", [
    ("wrong_magic", "wrong magic 0x1234"),
    ("truncated", r"truncated header: 5 of 8"),
    ("overlong", "message of length 612 unfinished"),
    ("stall", "no answer to the firmware request within 1 s"),
    ("garbage_types", "it sent only unknown type 0x7777"),
])
def test_bad_camera_answers_give_clear_errors(cam, fault, message):
    c = actioncam.ActionCam("127.0.0.1", cam.control_port, timeout=1).connect()
    cam.fault = fault
    t0 = time.monotonic()
    try:
        with pytest.raises(actioncam.CameraError, match=message):
            c.firmware()
    finally:
        c.close()
    assert time.monotonic() - t0 < BOUND_S


def test_session_reconnects_after_the_camera_drops_it(cam):
    with actioncam.ActionCam("127.0.0.1", cam.control_port, timeout=2) as c:
        assert c.firmware() == "v1.0 rc5"
        cam.drop_client()
        deadline = time.monotonic() + BOUND_S
        while c.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not c.connected
        assert c.firmware() == "v1.0 rc5"
        assert c.reconnects == 1 and cam.logins == 2


def test_unreachable_camera_and_refused_login(cam):
    port = free_udp_port()   # nothing listens on TCP there
    with pytest.raises(actioncam.CameraError, match="cannot reach the camera's control port"):
        actioncam.ActionCam("127.0.0.1", port, timeout=1).connect()
    with pytest.raises(actioncam.CameraTimeout, match="no answer to the login"):
        actioncam.ActionCam("127.0.0.1", cam.control_port, password="wrong", timeout=0.5).connect()
