"""bench/footprint.py's .mpy-vs-frozen rows are skipped, with the reason, when the
MicroPython source or the ARM toolchain is missing (and nothing is built)."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "bench"))

import footprint  # noqa: E402  (bench/ is not a package)
import interpreters  # noqa: E402


def test_no_source_skips_every_target_with_the_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("MICROPYTHON_SRC", str(tmp_path / "nowhere"))
    monkeypatch.setattr(interpreters, "BUILD_DIR", str(tmp_path / "interp"))
    figures, notes = [], []
    raw = footprint.ship_rows(1, str(tmp_path), {"xz_with_umqtt": 0}, figures, notes)
    assert raw == {} and figures == []
    assert any("x86-64" in n and "no MicroPython 1.22.0 source at" in n
               and "nowhere" in n for n in notes)
    assert any(n.startswith("lean ARM") and "skipped" in n for n in notes)
    assert not os.path.exists(str(tmp_path / "interp"))


def test_no_qemu_names_the_missing_tool_and_the_debian_packages(monkeypatch):
    real = interpreters.shutil.which
    monkeypatch.setattr(interpreters.shutil, "which",
                        lambda tool: None if tool == "qemu-arm" else real(tool))
    arm = [t for t in interpreters.targets() if t[0] == "ARM"][0]
    assert "qemu-arm" in arm[3] and "qemu-user" in arm[3]
    assert "arm-linux-gnueabihf-gcc" not in arm[3] or real("arm-linux-gnueabihf-gcc") is None


def test_the_series_is_the_one_make_image_applies():
    names = [os.path.basename(os.path.dirname(os.path.dirname(p)))
             for p in interpreters.patches()]
    assert names and names == sorted(names, key=("common", "lean").index)
    assert names[0] == "common"
