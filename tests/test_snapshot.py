"""The PUBLISH header the snapshot relay writes before streaming the image."""
import os
import subprocess

import pytest

from camagent.snapshot import publish_head
from mpvm import vm_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
vm = vm_fixture()


def _decode(head):
    """Independent reading of the header: (flags byte, remaining, topic)."""
    mult, remaining, i = 1, 0, 1
    while True:
        b = head[i]
        remaining += (b & 0x7F) * mult
        mult *= 128
        i += 1
        if not b & 0x80:
            break
    tlen = head[i] * 256 + head[i + 1]
    return head[0], remaining, head[i + 2:i + 2 + tlen], len(head) - (i + 2 + tlen)


@pytest.mark.parametrize("size", [0, 1, 125, 126, 16383, 500_000, 2_097_151, 2_097_152])
def test_remaining_length(size):
    flags, remaining, topic, extra = _decode(publish_head("cam/snapshot", size))
    assert (flags, topic, extra) == (0x30, b"cam/snapshot", 0)
    assert remaining == 2 + len(b"cam/snapshot") + size


def test_retain_flag_and_limit():
    assert publish_head(b"t", 1, retain=True)[0] == 0x31
    with pytest.raises(ValueError):
        publish_head("t", 268435455)


@pytest.mark.micropython
def test_same_bytes_under_micropython(vm):
    vm.run('from camagent.snapshot import publish_head\nh = list(publish_head("cam/snapshot", 500000))')
    assert bytes(vm.eval("h")) == publish_head("cam/snapshot", 500000)
