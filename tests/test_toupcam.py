"""camhost toupcam: the snap reply's layers, register packets, and the CLI against the
simulated ToupCam (a real JPEG from ffmpeg, checked with a real decoder)."""
import json
import os
import re
import socket
import time

import pytest

from camhost import cli, toupcam
from camhost import toupcam_wire as wire
from camhost.simtoupcam import SimToupCam, make_test_jpeg

BOUND_S = 20


def free_udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory):
    return make_test_jpeg(str(tmp_path_factory.mktemp("jpeg") / "t.jpg"))


@pytest.fixture
def listen():
    return free_udp_port()


@pytest.fixture
def cam(jpeg, listen):
    sim = SimToupCam(jpeg, report_to=[("127.0.0.1", listen)], report_interval_s=0.2)
    with sim:
        yield sim


def run_cli(sim, listen, *argv):
    return cli.main(["toupcam", "--host", "127.0.0.1", "--snap-port", str(sim.snap_port),
                     "--control-port", str(sim.control_port), "--listen-port", str(listen),
                     "--timeout", "1"] + list(argv))


# --- the snap reply -----------------------------------------------------------------------
def test_the_capture_shape_gives_the_published_lengths_and_offsets():
    from camhost.simtoupcam import CAPTURE_GAP, CAPTURE_HEAD, CAPTURE_HEADERS
    picture = wire.SOI + b"\x55" * (0x1E1E29 - 4) + wire.EOI
    reply = wire.build_reply(picture, CAPTURE_HEAD, CAPTURE_HEADERS, CAPTURE_GAP)
    got, layout = wire.jpeg_of(reply)
    assert got == picture
    assert [n for _, n in layout.layers] == [0x1E1E4A, 0x1E1E3A]
    assert layout.jpeg_at == 0x6D and layout.end - 1 == 0x1E1E95 == len(reply) - 1


@pytest.mark.parametrize("head, headers, gap", [
    (b"", (b"",), b""),                                     # two layers, nothing around them
    (b"\x07" * 3, (b"abc", b"", b"\x01" * 31), b"\x00"),    # four layers, odd sizes
    (b"h" * 400, (b"x" * 100,), b"g" * 40),                 # large headers and gap
    (b"\x00" * 70, (b"\x00" * 12,), b"\x00" * 9),           # the capture's, all zeros
])
def test_layers_of_any_size_are_parsed_not_assumed(jpeg, head, headers, gap):
    reply = wire.build_reply(jpeg, head, headers, gap)
    got, layout = wire.jpeg_of(reply)
    assert got == jpeg
    assert len(layout.layers) == len(headers) + 1
    assert layout.jpeg_at == 2 + len(head) + 4 * (len(headers) + 1) + sum(map(len, headers)) + 8 + \
        len(gap)


def test_replies_that_do_not_parse_name_the_layer_and_dump_the_start(jpeg):
    good = wire.build_reply(jpeg, b"\x00" * 10, (b"\x00" * 12,), b"")
    outer = wire.jpeg_of(good)[1].layers[0][0]
    assert outer == 12 and good[32:36] == wire.JPEG_MARKER
    cases = [
        (b"XX" + good[2:], "reply magic: expected 'GE', got b'XX'"),
        (wire.REPLY_MAGIC + b"\x00" * 5000, "GEPJ layer: no 'GEPJ' marker"),
        (good[:outer] + wire.LENGTH.pack(1234) + good[outer + 4:], "outer layers: no length before the "
                                                         "GEPJ layer ends where it does"),
        (good[:-2] + b"\x00\x00", "JPEG: does not end with EOI"),
        (good[:len(good) // 2], "JPEG: truncated"),
        (good.replace(wire.SOI, b"\x00\x00", 1), "JPEG: no SOI (FF D8) where the lengths put"),
        (good[:36] + wire.LENGTH.pack(len(jpeg) + 100) + good[40:],
         "GEPJ layer: the JPEG's length %d does not fit" % (len(jpeg) + 100)),
    ]
    for reply, message in cases:
        with pytest.raises(wire.ReplyError, match=re.escape(message)) as e:
            wire.jpeg_of(reply)
        assert "first %d bytes: %s" % (min(48, len(reply)), reply[:4].hex(" ")) in str(e.value)


def test_register_packets_match_the_capture():
    assert wire.build_register(0x03, 180) == bytes.fromhex("00000000020304000000B4")
    assert wire.parse_register(bytes.fromhex("00000000020304000000B4")) == (3, 180)
    assert wire.parse_register(bytes.fromhex("0000000002010200E2")) == (1, 226)   # n tolerated
    for bad, message in ((b"\x00\x00", "too short"), (b"\x01" * 11, "not a register packet"),
                         (bytes.fromhex("000000000203040000"), "value length 4 does not match")):
        with pytest.raises(wire.WireError, match=message):
            wire.parse_register(bad)
    with pytest.raises(wire.WireError, match="does not fit 4 bytes"):
        wire.build_register(3, 1 << 32)


# --- snap -----------------------------------------------------------------------------------
def test_snap_saves_a_byte_identical_jpeg_with_a_timestamped_name(cam, listen, tmp_path,
                                                                  capsys):
    out = tmp_path / "stills"
    out.mkdir()
    assert run_cli(cam, listen, "snap", "--out", str(out)) == 0
    files = os.listdir(str(out))
    assert len(files) == 1 and re.match(r"snap-\d{8}-\d{6}-\d{3}\.jpg$", files[0])
    assert (out / files[0]).read_bytes() == cam.jpeg
    assert "(%d bytes 1280x720)" % len(cam.jpeg) in capsys.readouterr().out
    assert cam.requests == [wire.DEFAULT_REQUEST]
    assert run_cli(cam, listen, "snap", "--out", str(tmp_path / "one.jpg")) == 0
    assert (tmp_path / "one.jpg").read_bytes() == cam.jpeg


def test_snap_count_and_interval(cam, listen, tmp_path):
    out = str(tmp_path / "series") + os.sep
    assert run_cli(cam, listen, "snap", "--out", out, "--count", "3", "--interval", "0.05") == 0
    files = sorted(os.listdir(out))
    assert len(files) == 3 and all(open(os.path.join(out, f), "rb").read() == cam.jpeg
                                   for f in files)
    assert run_cli(cam, listen, "snap", "--out", str(tmp_path / "x.jpg"), "--count", "2") == 2


def test_a_reply_split_over_many_reads(jpeg):
    """The head in 3-byte writes (length fields cut in two) and the JPEG in 1000-byte ones."""
    sim = SimToupCam(jpeg, head=b"\x01" * 5, headers=(b"\x02" * 7, b"\x03" * 3), gap=b"\x04",
                     chunk=[3] * 30 + [1000], chunk_pause_s=0.001)
    with sim:
        got = toupcam.snap("127.0.0.1", sim.snap_port, timeout=5)
    assert got.jpeg == jpeg and got.reads >= 10
    assert len(got.layout.layers) == 3


@pytest.mark.parametrize("fault, message, code", [
    ("truncated", r"snap reply, JPEG: truncated: the camera closed the connection after "
                  r"\d+ of \d+ JPEG bytes", 1),
    ("wrong_length", "snap reply, outer layers: no length before the GEPJ layer ends where", 1),
    ("no_jpeg", "snap reply, GEPJ layer: no 'GEPJ' marker", 1),
    ("not_jpeg", "snap reply, JPEG: does not end with EOI", 1),
    ("silent", "no reply to the snap request within 1 s", 3),
])
def test_bad_replies_give_clear_errors_and_save_nothing(cam, listen, tmp_path, capsys, fault,
                                                        message, code):
    cam.fault = fault
    t0 = time.monotonic()
    assert run_cli(cam, listen, "snap", "--out", str(tmp_path)) == code
    assert re.search(message, capsys.readouterr().err)
    assert os.listdir(str(tmp_path)) == []
    assert time.monotonic() - t0 < BOUND_S


def test_a_picture_the_decoder_refuses(listen, tmp_path, capsys):
    broken = wire.SOI + b"\xff\xdb\x00\x43" + b"\x00" * 500 + wire.EOI
    with SimToupCam(broken) as sim:
        assert run_cli(sim, listen, "snap", "--out", str(tmp_path)) == 1
        assert "the picture does not decode" in capsys.readouterr().err
        assert os.listdir(str(tmp_path)) == []
        assert run_cli(sim, listen, "snap", "--out", str(tmp_path), "--no-decode") == 0
        assert len(os.listdir(str(tmp_path))) == 1


def test_the_request_comes_from_a_captured_file(jpeg, listen, tmp_path, capsys):
    captured = b"GE\x00\x00\x00\x06snap!!"
    with SimToupCam(jpeg, request=captured) as sim:
        assert run_cli(sim, listen, "snap", "--out", str(tmp_path)) == 1
        assert "--request FILE" in capsys.readouterr().err
        hexfile = tmp_path / "req.txt"
        hexfile.write_text(":".join("%02x" % b for b in captured) + "\n")
        raw = tmp_path / "req.bin"
        raw.write_bytes(captured)
        for f in (hexfile, raw):
            assert run_cli(sim, listen, "snap", "--out", str(tmp_path / "got.jpg"),
                           "--request", str(f)) == 0
            assert (tmp_path / "got.jpg").read_bytes() == jpeg
        assert sim.requests[-2:] == [captured, captured]
    assert run_cli(sim, listen, "snap", "--request", str(tmp_path / "nope")) == 2


def test_an_unreachable_camera(listen, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]     # bound, not listening: refused
        assert cli.main(["toupcam", "--host", "127.0.0.1", "--snap-port", str(port), "snap"]) == 1
    assert "cannot reach the camera's snap port" in capsys.readouterr().err


# --- registers ------------------------------------------------------------------------------
def test_watch_get_and_set_round_trip(cam, listen, capsys):
    assert run_cli(cam, listen, "watch", "--count", "3") == 0
    lines = capsys.readouterr().out.splitlines()
    assert set(lines) == {"reg 0x01 color_temperature = 58000", "reg 0x03 exposure = 180",
                          "reg 0x0A gamma = 700"}
    assert run_cli(cam, listen, "get", "exposure") == 0
    assert capsys.readouterr().out == "reg 0x03 exposure = 180\n"
    assert run_cli(cam, listen, "set", "exposure", "0xC8") == 0
    assert "reg 0x03 exposure = 200 (confirmed" in capsys.readouterr().out
    assert cam.registers[3] == 200 and cam.writes == [(3, 200)]
    assert run_cli(cam, listen, "set", "0x07", "5") == 0       # unnamed, by number
    assert "reg 0x07 = 5 (confirmed" in capsys.readouterr().out
    assert run_cli(cam, listen, "get", "7") == 0
    assert capsys.readouterr().out == "reg 0x07 = 5\n"


def test_set_not_taken_or_unconfirmed(cam, listen, capsys):
    cam.udp_fault = "ignore_writes"
    assert run_cli(cam, listen, "set", "exposure", "90") == 1
    assert "wrote 90, but the camera reports 180" in capsys.readouterr().err
    cam.udp_fault = "silent"
    assert run_cli(cam, listen, "set", "exposure", "90") == 3
    assert "written, unconfirmed: no report of it within 1 s" in capsys.readouterr().out
    assert run_cli(cam, listen, "get", "gamma") == 3
    assert "no report of register 0x0A within 1 s" in capsys.readouterr().err


def test_watch_skips_bad_packets(cam, listen, capsys):
    cam.udp_fault = "garbage"
    assert run_cli(cam, listen, "watch", "--count", "4") == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 4
    assert "skipped a bad packet from 127.0.0.1: register 0x03: value length 9" in err


def test_register_names_are_user_extendable(cam, listen, tmp_path, capsys):
    names = tmp_path / "regs.json"
    names.write_text(json.dumps({"brightness": "0x0B", "exposure_time": 3}))
    assert run_cli(cam, listen, "--registers", str(names), "set", "brightness", "42") == 0
    assert "reg 0x0B brightness = 42 (confirmed" in capsys.readouterr().out
    assert cam.registers[0x0B] == 42
    assert run_cli(cam, listen, "--registers", str(names), "registers") == 0
    assert "0x0B  brightness" in capsys.readouterr().out
    for text, message in (("[1]", "expected a JSON object"), ("{", "is not JSON"),
                          ('{"x": 300}', "is not a number 0-255"),
                          ('{"0x05": 5}', "cannot be a register name")):
        names.write_text(text)
        assert run_cli(cam, listen, "--registers", str(names), "get", "exposure") == 2
        assert message in capsys.readouterr().err


def test_bad_register_arguments(cam, listen, capsys):
    for argv, message in ((["get", "brightnes"], "unknown register 'brightnes'; known names"),
                          (["get", "300"], "register 300 is not 0-255"),
                          (["set", "exposure", "-1"], "does not fit the register's 32 bits"),
                          (["set", "exposure", "lots"], "is not a whole number")):
        assert run_cli(cam, listen, *argv) == 2
        assert message in capsys.readouterr().err
    assert cam.writes == []


def test_the_camera_address_must_be_given(capsys):
    assert cli.main(["toupcam", "snap"]) == 2
    assert "give the camera's address with --host" in capsys.readouterr().err
    assert cli.main(["toupcam", "registers"]) == 0


def test_a_busy_report_port_is_a_clear_error(cam, listen, capsys):
    with toupcam.Controls("127.0.0.1", cam.control_port, listen, "127.0.0.1"):
        assert run_cli(cam, listen, "watch", "--count", "1") == 1
    assert "cannot listen on UDP port %d for the camera's reports" % listen in \
        capsys.readouterr().err
