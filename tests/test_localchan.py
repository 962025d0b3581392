"""The local channel's line parser."""
import pytest

from camagent.localchan import LineError, parse_line
from mpvm import vm_fixture

vm = vm_fixture()


def test_good_lines():
    assert parse_line(b"motion\n") == ("motion", [])
    assert parse_line(b"jump_to_abs 0.5 -0.2 0\n") == ("jump_to_abs", ["0.5", "-0.2", "0"])
    assert parse_line(b"set_preset 2 door") == ("set_preset", ["2", "door"])


@pytest.mark.parametrize("line,why", [
    (b"", "empty"), (b"rm -rf /\n", "unknown"), (b"move_left now\n", "takes 0"),
    (b"jump_to_abs 1 2\n", "takes 3"), (b"\xff\xfe\n", "not text"), (b"motion" * 40, "too long"),
])
def test_refused(line, why):
    with pytest.raises(LineError, match=why):
        parse_line(line)


@pytest.mark.micropython
def test_under_micropython(vm):
    vm.run('from camagent.localchan import parse_line\nr = list(parse_line(b"move_preset 3\\n"))')
    assert vm.eval("r") == ["move_preset", ["3"]]
