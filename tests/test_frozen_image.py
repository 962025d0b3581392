"""`camhost image build` (make image) freezes the agent into micropython by default
(BR2_PACKAGE_CAMAGENT_FROZEN=y in the merged defconfig, and in the image's manifest);
--no-frozen (make image FROZEN=0) ships it as .mpy files."""
import json
import os

import kconfiglib

from camhost import cli, openipc
from test_image_build import BOARD, make_n, options, tree  # noqa: F401

EXTERNAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "buildroot-package")


def test_frozen_is_the_default_and_no_frozen_says_not_set(tree, tmp_path):  # noqa: F811
    p = openipc.plan(str(tree), BOARD, output=str(tmp_path / "a"))
    assert options(p.defconfig)["BR2_PACKAGE_CAMAGENT_FROZEN"] == \
        "BR2_PACKAGE_CAMAGENT_FROZEN=y"
    p = openipc.plan(str(tree), BOARD, output=str(tmp_path / "b"), frozen=False)
    # said outright: the package's Kconfig default is y
    assert options(p.defconfig)["BR2_PACKAGE_CAMAGENT_FROZEN"] == \
        "# BR2_PACKAGE_CAMAGENT_FROZEN is not set"
    assert ", agent as .mpy files" in p.defconfig


def test_the_package_option_defaults_to_frozen(monkeypatch):
    """A Buildroot config of one's own that selects camagent gets the frozen agent too."""
    monkeypatch.setenv("BR2_EXTERNAL_CAMAGENT_PATH", EXTERNAL)
    conf = kconfiglib.Kconfig(os.path.join(EXTERNAL, "package", "camagent", "Config.in"),
                              warn=False)
    default = conf.syms["BR2_PACKAGE_CAMAGENT_FROZEN"].defaults
    assert [str(d[0].name) for d in default] == ["y"]


def test_image_build_records_frozen_or_not(tree, tmp_path, capsys):  # noqa: F811
    for flag, frozen in ((None, True), ("--no-frozen", False)):
        work = tmp_path / str(frozen)
        out = work / "camagent.bin"
        argv = ["image", "build", "--board", BOARD.name, "--openipc", str(tree),
                "--output", str(work / "br"), "--jobs", "1", "--out", str(out)]
        code = cli.main(argv + ([flag] if flag else []))
        assert code == 0, capsys.readouterr().out
        manifest = json.loads((work / "camagent.manifest.json").read_text())
        assert manifest["frozen"] is frozen
        with open(str(work / "br" / "camagent_defconfig")) as f:
            lines = f.read().splitlines()
        assert ("BR2_PACKAGE_CAMAGENT_FROZEN=y" in lines) is frozen
        assert ("# BR2_PACKAGE_CAMAGENT_FROZEN is not set" in lines) is not frozen


def test_make_image_freezes_unless_frozen_is_0():
    assert "--no-frozen" in make_n("image", "OPENIPC=/src/openipc", "FROZEN=0")
    assert "--no-frozen" not in make_n("image", "OPENIPC=/src/openipc")
