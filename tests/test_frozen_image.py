"""`camhost image build --frozen` (make image FROZEN=1): BR2_PACKAGE_CAMAGENT_FROZEN in the
merged defconfig, and in the image's manifest; without it the agent ships as .mpy."""
import json

from camhost import cli, openipc
from test_image_build import BOARD, make_n, options, tree  # noqa: F401


def test_frozen_adds_our_option_only_when_asked(tree, tmp_path):  # noqa: F811
    plain = options(openipc.plan(str(tree), BOARD, output=str(tmp_path / "a")).defconfig)
    assert "BR2_PACKAGE_CAMAGENT_FROZEN" not in plain
    p = openipc.plan(str(tree), BOARD, output=str(tmp_path / "b"), frozen=True)
    assert options(p.defconfig)["BR2_PACKAGE_CAMAGENT_FROZEN"] == \
        "BR2_PACKAGE_CAMAGENT_FROZEN=y"
    assert ", agent frozen" in p.defconfig


def test_image_build_frozen_records_it(tree, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "camagent.bin"
    code = cli.main(["image", "build", "--board", BOARD.name, "--openipc", str(tree),
                     "--output", str(tmp_path / "br"), "--jobs", "1", "--out", str(out),
                     "--frozen"])
    assert code == 0, capsys.readouterr().out
    manifest = json.loads((tmp_path / "camagent.manifest.json").read_text())
    assert manifest["frozen"] is True
    with open(str(tmp_path / "br" / "camagent_defconfig")) as f:
        assert "BR2_PACKAGE_CAMAGENT_FROZEN=y" in f.read().splitlines()


def test_make_image_frozen_passes_the_flag():
    assert "--frozen" in make_n("image", "OPENIPC=/src/openipc", "FROZEN=1")
    assert "--frozen" not in make_n("image", "OPENIPC=/src/openipc")
