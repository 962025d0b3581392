"""`camhost image build|repack|mpy|budget`: firmware images with camagent in them.

The commands are thin: openipc.py runs the OpenIPC build, repack.py adds the agent to
a release, budget.py does the arithmetic, slim.py knows what can be dropped.
"""
import argparse
import glob
import json
import os
import shutil
import tempfile

from . import budget, firstboot, layout, openipc, repack, slim
from .backups import contents_lines, describe
from .boards import BOARDS, board as find_board
from .errors import CamhostError


def register(subparsers):
    image = subparsers.add_parser("image", help="build or repack firmware with camagent",
                                  description="Build or repack firmware images with "
                                              "camagent in them.")
    sub = image.add_subparsers(dest="image_command", metavar="SUBCOMMAND")
    image.set_defaults(func=lambda args: image.print_help() or 2)

    # allow_abbrev=False: an abbreviated --wifi-password... must not reach another option
    p = sub.add_parser("build", help="build OpenIPC with camagent from source", allow_abbrev=False,
                       description="Run OpenIPC's Buildroot build with camagent's "
                                   "BR2_EXTERNAL tree and compose the 8 MiB image.")
    _board(p)
    p.add_argument("--openipc", required=True, metavar="DIR",
                   help="OpenIPC firmware tree (git clone https://github.com/OpenIPC/firmware)")
    p.add_argument("--output", metavar="DIR",
                   help="Buildroot output directory (default DIR/output-camagent-BOARD)")
    p.add_argument("--tls", action="store_true",
                   help="build MicroPython with TLS for the MQTT connection (about 60 KB)")
    p.add_argument("--onvif", action="store_true",
                   help="add OpenIPC's onvif-simple-server with PTZ wired to the agent "
                        "(its flash cost is in the budget report)")
    p.add_argument("--frozen", action=argparse.BooleanOptionalAction, default=True,
                   help="freeze the agent into MicroPython (the default: less than half "
                        "the heap of .mpy files, about 7 KB more flash: docs/images.md); "
                        "--no-frozen installs .mpy files instead")
    p.add_argument("--jobs", type=int, metavar="N", help="parallel jobs (default: all CPUs)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the merged defconfig and the commands; run nothing")
    _image_options(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("repack", help="add camagent to an OpenIPC release", allow_abbrev=False,
                       description="Unpack an OpenIPC release, slim it, add the MicroPython "
                                   "interpreter and the agent, and compose the 8 MiB image.")
    _board(p)
    p.add_argument("--firmware", metavar="TGZ",
                   help="OpenIPC release (default: the board's, openipc.SOC-nor-lite.tgz, "
                        "in the current directory)")
    p.add_argument("--micropython", required=True, metavar="PATH",
                   help="MicroPython 1.22 unix-port executable built for the camera (ARM)")
    wifi = p.add_mutually_exclusive_group()
    wifi.add_argument("--wifi-modules", metavar="DIR",
                      help="the wifi driver, mac80211 and crypto modules (.ko) built for the "
                           "release's kernel: `make image`'s output/target/lib/modules or a "
                           "matching OpenIPC build")
    wifi.add_argument("--no-wifi", action="store_true",
                      help="repack without wifi: " + repack.NO_WIFI)
    _line_numbers(p)
    _image_options(p)
    p.set_defaults(func=cmd_repack)

    p = sub.add_parser("mpy", help="compile the agent and umqtt to .mpy",
                       description="Compile agent/camagent/*.py and umqtt.simple with "
                                   "mpy-cross 1.22 and print their sizes.")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    _line_numbers(p)
    p.set_defaults(func=cmd_mpy)

    p = sub.add_parser("budget", help="show the partitions' use in an 8 MiB image",
                       description="Print used and free bytes per partition of a full "
                                   "image or backup.")
    p.add_argument("image", metavar="IMAGE")
    p.set_defaults(func=cmd_budget)


def _board(p):
    p.add_argument("--board", required=True, choices=sorted(BOARDS), help="camera model")


def _image_options(p):
    boot = p.add_mutually_exclusive_group()
    boot.add_argument("--bootloader", metavar="FILE",
                      help="U-Boot binary for the boot partition (env is left erased)")
    boot.add_argument("--backup", metavar="FILE",
                      help="8 MiB backup of this camera: boot and env are taken from it")
    slimming = p.add_mutually_exclusive_group()
    slimming.add_argument("--slim", metavar="PROFILE", default=slim.DEFAULT_PROFILE,
                          help="slimming profile (default %s: %s)"
                          % (slim.DEFAULT_PROFILE, ", ".join(slim.PROFILES[slim.DEFAULT_PROFILE])))
    slimming.add_argument("--no-slim", dest="slim", action="store_const", const=None,
                          help="keep everything the firmware has")
    p.add_argument("--drop-webui", action="store_true",
                   help="also remove OpenIPC's web UI (kept by default): you lose %s"
                   % slim.BY_NAME[slim.OPT_IN].loses)
    firstboot.add_arguments(p)
    p.add_argument("--out", metavar="FILE",
                   help="image to write (default build/camagent-BOARD.bin); the manifest "
                        "goes beside it as .manifest.json")


def _out(args):
    return args.out or os.path.join(repack.ROOT, "build", "camagent-%s.bin" % args.board)


def _report(result, settings=None):
    print(result.budget.table())
    print("wrote %s and %s" % (result.image, result.manifest))
    with open(result.manifest) as f:
        manifest = json.load(f)
    if manifest.get("differs_from_backup") is not None:
        print("partitions that differ from the backup (what `camhost flash` writes): %s"
              % (", ".join(manifest["differs_from_backup"]) or "none"))
    for where, values in (manifest.get("first_boot") or {}).items():
        print("first-boot settings in %s: %s" % (where, ", ".join(
            "%s=%s" % kv for kv in values.items())))
    if settings is None or settings.mqtt_host is None:
        print("note: no --mqtt-host: the agent starts without a broker; give --mqtt-host "
              "(and --wifi-ssid) so the camera reaches Home Assistant on its first boot")
    if not result.complete:
        print("note: no --bootloader or --backup, so boot and env are erased (0xFF) in this "
              "image and `camhost flash` will refuse it: make it again with --backup FILE "
              "(a backup of this camera from `camhost backup`), or write only its kernel "
              "and rootfs partitions another way (U-Boot: sf write).")
    return 0


def cmd_repack(args):
    settings = firstboot.from_args(args)
    firmware = args.firmware or find_board(args.board).release_name
    result = repack.repack(args.board, firmware, args.micropython, _out(args),
                           bootloader=args.bootloader, backup=args.backup,
                           slim_profile=args.slim, wifi_modules_dir=args.wifi_modules,
                           no_wifi=args.no_wifi, settings=settings,
                           drop_webui=args.drop_webui, line_numbers=args.line_numbers)
    return _report(result, settings)


# Buildroot package of each wifi driver (buildroot-package/package/camagent/Config.in)
WIFI_PACKAGES = {"ssv6155": "ssv615x-openipc", "ssv6x5x": "ssv635x-openipc"}
# what the kernel fragment adds as modules for the wifi (built in, they are not files)
WIFI_KERNEL_MODULES = ("lib/modules/*/kernel/net/mac80211/mac80211.ko",
                       "lib/modules/*/kernel/crypto/ccm.ko", "lib/modules/*/kernel/crypto/gcm.ko",
                       "lib/modules/*/kernel/crypto/ghash-generic.ko")


def cmd_build(args):
    settings = firstboot.from_args(args)
    b = find_board(args.board)
    plan = openipc.plan(args.openipc, b, output=args.output, slim_profile=args.slim,
                        tls=args.tls, jobs=args.jobs, drop_webui=args.drop_webui,
                        onvif=args.onvif, frozen=args.frozen)
    if args.dry_run:
        print(openipc.describe(plan))
        return 0
    # Refuse bad inputs now rather than after an hour of building.
    out = _out(args)
    repack.refuse_out_among_inputs(out, (args.bootloader, args.backup))
    bootenv = repack.first_boot_env(repack.boot_and_env(args.bootloader, args.backup),
                                    settings, b)
    images = openipc.run(plan)
    release = repack.read_images(images["kernel"], images["rootfs"])
    report = budget.Budget("%s, OpenIPC %s + camagent" % (b.name, b.openipc_board))
    report.rootfs_before = len(release.rootfs)
    # what no config leaves out (the other sensors' files) and the first-boot settings:
    # the built rootfs is rebuilt with them
    sensor = repack.sensor_of(bootenv)
    per_sensor = [i for i in slim.profile(args.slim, args.drop_webui) if i.per_sensor]
    config = firstboot.agent_config(repack.config_for(b.name), settings)
    files = {"etc/camagent.json": config.encode()} if config != repack.config_for(b.name) else {}
    if files or (per_sensor and sensor):
        release = release._replace(rootfs=repack.rewrite_rootfs(
            release.rootfs, files, per_sensor, sensor, report))
    args_sq = repack.squashfs_args(release.rootfs)
    target = os.path.join(plan.output, "target")
    wifi_package = WIFI_PACKAGES[b.wifi_driver]
    installed = openipc.package_files(plan.output, ("camagent", "micropython", wifi_package) +
                                      (("onvif-simple-server",) if args.onvif else ()))
    wifi_kernel = sorted(os.path.relpath(p, target) for pattern in WIFI_KERNEL_MODULES
                         for p in glob.glob(os.path.join(target, pattern)))
    if not any(os.path.basename(p) == b.wifi_driver + ".ko" for p in installed[wifi_package]):
        raise CamhostError("the build installed no %s.ko (package %s): the camera would have "
                           "no wifi; check that %s selects it"
                           % (b.wifi_driver, wifi_package, b.fragment))
    with tempfile.TemporaryDirectory(prefix="camhost-build-") as tmp:
        for package, paths in sorted(installed.items()):
            present = [p for p in paths if os.path.lexists(os.path.join(target, p))]
            label = ("wifi: package %s" if package == wifi_package else "package %s") % package
            report.add(label, *repack.measure(target, present, args_sq, tmp))
        if wifi_kernel:
            report.add("wifi: %s" % ", ".join(os.path.basename(p) for p in wifi_kernel),
                       *repack.measure(target, wifi_kernel, args_sq, tmp))
    for item in slim.profile(args.slim, args.drop_webui):
        if item.per_sensor:
            continue    # removed from the built rootfs above, when the sensor is known
        report.remove("slim: %s (not built)" % item.name, 0, 0, None,
                      "config: %s; you lose %s" % ("; ".join(item.kconfig + item.linux_config),
                                                   item.loses))
    report.use("kernel", len(release.kernel), release.kernel_name)
    report.use("rootfs", len(release.rootfs), release.rootfs_name)
    if report.overflows() and args.slim is None:
        report.suggest("--slim %s" % slim.DEFAULT_PROFILE, None,
                       "leaves out " + ", ".join(slim.PROFILES[slim.DEFAULT_PROFILE]))
    if report.overflows() and not args.drop_webui:
        report.suggest("--drop-webui", None, "you lose " + slim.BY_NAME[slim.OPT_IN].loses)
    if report.overflows() and per_sensor and not sensor:
        report.suggest("dropping the other sensors' files (--backup with sensor= in its "
                       "U-Boot environment)", None, "nothing")
    manifest = {"board": b.name, "openipc": plan.tree.path, "output": plan.output,
                "slim_profile": args.slim, "tls": args.tls, "drop_webui": args.drop_webui,
                "onvif": args.onvif, "frozen": args.frozen,
                "defconfig": plan.defconfig_path, "sensor": sensor,
                "first_boot": firstboot.summary(settings, b)}
    return _report(repack.write_image(out, report, release.kernel, release.rootfs, bootenv,
                                      manifest, args.backup), settings)


def _line_numbers(p):
    p.add_argument("--line-numbers", action="store_true",
                   help="keep line numbers in the agent's bytecode, for tracebacks while "
                        "debugging (costs about a tenth more flash, and heap)")


def cmd_mpy(args):
    if os.path.isdir(args.out):
        for sub in ("camagent", "umqtt"):
            shutil.rmtree(os.path.join(args.out, sub), ignore_errors=True)
    table, count = mpy_table(args.out, args.line_numbers)
    print(table)
    print("wrote %d files to %s" % (count, args.out))
    return 0


def mpy_table(out, line_numbers=False):
    """Compiles the agent into out; returns (the size table, files written).

    The table is what `camhost image mpy` prints and what docs/images.md shows."""
    compiled = repack.compile_mpy(out, line_numbers)
    with tempfile.TemporaryDirectory(prefix="camhost-mpy-") as tmp:
        # only what was compiled: out may hold other files
        xz = repack.measure(out, [c.target for c in compiled], ["-comp", "xz"], tmp)[2]
    rows = ["%-28s %8s %8s" % ("module", ".py", ".mpy")]
    rows += ["%-28s %8d %8d" % (c.target, c.py_bytes, c.mpy_bytes) for c in compiled]
    rows.append("%-28s %8d %8d" % ("total", sum(c.py_bytes for c in compiled),
                                   sum(c.mpy_bytes for c in compiled)))
    rows.append("in a squashfs (xz): %s bytes" % budget.fmt(xz))
    return "\n".join(rows), len(compiled)


def cmd_budget(args):
    blob = layout.read_image(args.image, "image")
    # Whatever it holds (a stock firmware's backup too): what parses is described, the
    # rest counted up to its last non-erased byte, and what did not parse is noted.
    contents = describe(blob)
    k, s = contents.kernel, contents.rootfs
    parsed = {"kernel": k and (k.total_size, "uImage %r" % k.name),
              "rootfs": s and (s.bytes_used, "squashfs, %s, %d-byte blocks"
                               % (s.compression, s.block_size))}
    report = budget.Budget(args.image)
    for p in layout.PARTITIONS:
        if parsed.get(p.name):
            report.use(p.name, *parsed[p.name])
            continue
        used = len(layout.slice_of(blob, p.name).rstrip(b"\xff"))
        if used:
            report.use(p.name, used, "content up to the last non-0xFF byte")
    print(report.table())
    print("\n".join(contents_lines(contents)))
    return 0
