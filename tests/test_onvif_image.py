"""`camhost image build --onvif` (make image ONVIF=1): OpenIPC's onvif-simple-server and
our onvif.conf in the defconfig, and the server's flash cost as its own budget line.

The build runs OpenIPC's stand-in from test_image_build, extended to install files
for onvif-simple-server when the merged config selects it, so the budget measures
what Buildroot's packages-file-list.txt says the package installed.
"""
import json

from camhost import cli, openipc
from test_image_build import BOARD, STAND_IN_BUILDROOT, options, tree  # noqa: F401

# onvif-simple-server's files, when the merged config asks for it
ONVIF_INSTALL = """\
\t@if grep -q '^BR2_PACKAGE_ONVIF_SIMPLE_SERVER=y' $(O)/.config; then \\
\t\tmkdir -p $(O)/target/usr/sbin $(O)/target/var/www/onvif; \\
\t\thead -c 90000 /dev/urandom > $(O)/target/usr/sbin/onvif_simple_server; \\
\t\tprintf 'onvif-simple-server,./usr/sbin/onvif_simple_server\\n' \\
\t\t\t>> $(O)/build/packages-file-list.txt; \\
\tfi
"""


def with_onvif_stand_in(tree):  # noqa: F811
    text = STAND_IN_BUILDROOT.replace("\t@head -c 1000000 /dev/urandom > $(O)/kernel.bin\n",
                                      ONVIF_INSTALL +
                                      "\t@head -c 1000000 /dev/urandom > $(O)/kernel.bin\n")
    assert text != STAND_IN_BUILDROOT
    (tree / "stand-in-buildroot.mk").write_text(text)


def test_onvif_adds_the_server_and_our_option(tree, tmp_path):  # noqa: F811
    plain = options(openipc.plan(str(tree), BOARD, output=str(tmp_path / "a")).defconfig)
    assert "BR2_PACKAGE_ONVIF_SIMPLE_SERVER" not in plain
    p = openipc.plan(str(tree), BOARD, output=str(tmp_path / "b"), onvif=True)
    opts = options(p.defconfig)
    assert opts["BR2_PACKAGE_ONVIF_SIMPLE_SERVER"] == "BR2_PACKAGE_ONVIF_SIMPLE_SERVER=y"
    assert opts["BR2_PACKAGE_CAMAGENT_ONVIF"] == "BR2_PACKAGE_CAMAGENT_ONVIF=y"
    assert ", ONVIF" in p.defconfig


def test_budget_measures_the_onvif_server(tree, tmp_path, capsys):  # noqa: F811
    with_onvif_stand_in(tree)
    out = tmp_path / "camagent.bin"
    code = cli.main(["image", "build", "--board", BOARD.name, "--openipc", str(tree),
                     "--output", str(tmp_path / "br"), "--jobs", "1", "--out", str(out),
                     "--onvif"])
    text = capsys.readouterr().out
    assert code == 0, text
    manifest = json.loads((tmp_path / "camagent.manifest.json").read_text())
    assert manifest["onvif"] is True
    added = {c["what"]: c for c in manifest["changes"] if c["change"] == "added"}
    assert added["package onvif-simple-server"]["bytes"] == 90000
    assert added["package onvif-simple-server"]["squashed_bytes"] > 80000
    assert "package onvif-simple-server" in text


def test_make_image_onvif_passes_the_flag():
    from test_image_build import make_n
    assert "--onvif" in make_n("image", "OPENIPC=/src/openipc", "ONVIF=1")
    assert "--onvif" not in make_n("image", "OPENIPC=/src/openipc")
