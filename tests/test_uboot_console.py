"""`camhost console` against a simulated U-Boot on a real pseudo-terminal, and the TFTP
server on real loopback sockets."""
import io
import os
import select
import shutil
import socket
import subprocess
import sys
import time

import pytest
import tftpy

from camhost.cli import main
from camhost.errors import CamhostError
from camhost.tftpserve import TftpServer
from flash_fixtures import chip, firmware  # noqa: F401
from uboot_sim import PROMPT, free_udp_port, uboot  # noqa: F401

HOSTSIDE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hostside")


def test_console_interrupts_autoboot_and_runs_commands(uboot, capsys):
    sim = uboot()
    argv = ["console", "--port", sim.port, "--timeout", "10",
            "--run", "printenv bootdelay", "--run", "setenv serverip 10.0.0.1",
            "--run", "printenv serverip"]
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "%sprintenv bootdelay\nbootdelay=1\n" % PROMPT in out
    assert "serverip=10.0.0.1" in out
    # it checked the prompt was U-Boot's, then ran exactly what it was asked
    assert sim.commands == ["version", "printenv bootdelay", "setenv serverip 10.0.0.1",
                            "printenv serverip"]

    # a camera already waiting at the prompt: found again, the typed '*' discarded
    assert main(["console", "--port", sim.port, "--timeout", "10", "--run", "printenv"]) == 0
    assert "serverip=10.0.0.1" in capsys.readouterr().out
    assert sim.commands[4:] == ["version", "printenv"]


def test_console_with_another_break_key(uboot, capsys):
    sim = uboot(break_key=b"\r")
    assert main(["console", "--port", sim.port, "--timeout", "10", "--break-key", "ENTER",
                 "--run", "printenv baudrate"]) == 0
    assert "baudrate=115200" in capsys.readouterr().out


@pytest.mark.parametrize("mode, expected", [
    ("silent", "nothing was received at all"),
    ("no-break", "the camera booted Linux instead"),
    ("linux-shell", "is not U-Boot's"),
])
def test_no_prompt_says_what_to_do(uboot, capsys, mode, expected):
    sim = uboot(mode=mode, bootdelay=0.2)
    assert main(["console", "--port", sim.port, "--timeout", "1.5", "--run", "version"]) == 1
    err = capsys.readouterr().err
    assert expected in err
    assert "ower-cycle" in err
    if mode == "silent":
        assert "TX and RX are not swapped" in err
    assert sim.commands == []


def test_interactive_console_on_a_terminal(uboot):
    sim = uboot()
    # camhost runs on a real terminal of its own, as it would for a person
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "camhost", "console", "--port", sim.port,
                             "--timeout", "10"], stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    try:
        screen = read_until(master, b"Ctrl-] leaves")
        os.write(master, b"printenv bootdelay\r")
        screen += read_until(master, b"bootdelay=1")
        os.write(master, b"\x1d")  # Ctrl-]
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    assert sim.commands == ["version", "printenv bootdelay"]
    assert b"\r\n\r\n" not in screen.split(b"Ctrl-] leaves")[1]  # one line break per line


def read_until(fd, wanted, timeout=10):
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        assert time.monotonic() < deadline, seen
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            seen += os.read(fd, 4096)
    return seen


def test_console_port_that_does_not_exist(tmp_path, capsys):
    assert main(["console", "--port", str(tmp_path / "ttyUSB9"), "--run", "version"]) == 1
    assert "cannot open %s" % (tmp_path / "ttyUSB9") in capsys.readouterr().err


# --- the TFTP server ------------------------------------------------------------------
def test_tftp_server_serves_files_read_only(tmp_path):
    (tmp_path / "kernel.bin").write_bytes(os.urandom(70000))
    with TftpServer(str(tmp_path), "127.0.0.1", free_udp_port()) as server:
        client = tftpy.TftpClient("127.0.0.1", server.port)
        got = io.BytesIO()
        client.download("kernel.bin", got, timeout=1)
        assert got.getvalue() == (tmp_path / "kernel.bin").read_bytes()
        (tmp_path / "upload.bin").write_bytes(b"x")
        with pytest.raises(tftpy.TftpException):
            tftpy.TftpClient("127.0.0.1", server.port).upload(
                "evil.bin", str(tmp_path / "upload.bin"), timeout=1)
    assert not (tmp_path / "evil.bin").exists()


def test_tftp_server_errors_are_explained(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        with pytest.raises(CamhostError, match="already in use"):
            TftpServer(str(tmp_path), "127.0.0.1", taken.getsockname()[1]).start()
    with pytest.raises(CamhostError, match="not an address of this computer"):
        TftpServer(str(tmp_path), "192.0.2.1", free_udp_port()).start()


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to run as an unprivileged user")
def test_tftp_port_69_needs_root(tmp_path):
    # as an ordinary user (nobody), as most people run camhost
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from camhost.tftpserve import TftpServer\n"
            "try:\n    TftpServer('/', '127.0.0.1', 69).start()\n"
            "except Exception as e:\n    print(e)\n" % HOSTSIDE)
    run = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "binding UDP port 69 on 127.0.0.1 needs root" in run.stdout, run.stderr
    assert "--tftp-port" in run.stdout
