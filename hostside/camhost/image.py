"""`camhost image build|repack|mpy|budget`: firmware images with camagent in them.

The commands are thin: openipc.py runs the OpenIPC build, repack.py adds the agent to
a release, budget.py does the arithmetic, slim.py knows what can be dropped.
"""
import os
import shutil
import tempfile

from . import budget, layout, openipc, repack, slim
from .boards import BOARDS, board as find_board
from .errors import CamhostError
from .formats import FormatError, parse_squashfs, parse_uimage


def register(subparsers):
    image = subparsers.add_parser("image", help="build or repack firmware with camagent",
                                  description="Build or repack firmware images with "
                                              "camagent in them.")
    sub = image.add_subparsers(dest="image_command", metavar="SUBCOMMAND")
    image.set_defaults(func=lambda args: image.print_help() or 2)

    p = sub.add_parser("build", help="build OpenIPC with camagent from source",
                       description="Run OpenIPC's Buildroot build with camagent's "
                                   "BR2_EXTERNAL tree and compose the 8 MiB image.")
    _board(p)
    p.add_argument("--openipc", required=True, metavar="DIR",
                   help="OpenIPC firmware tree (git clone https://github.com/OpenIPC/firmware)")
    p.add_argument("--output", metavar="DIR",
                   help="Buildroot output directory (default DIR/output-camagent-BOARD)")
    p.add_argument("--tls", action="store_true",
                   help="build MicroPython with TLS for the MQTT connection (about 60 KB)")
    p.add_argument("--jobs", type=int, metavar="N", help="parallel jobs (default: all CPUs)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the merged defconfig and the commands; run nothing")
    _image_options(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("repack", help="add camagent to an OpenIPC release",
                       description="Unpack an OpenIPC release, slim it, add the MicroPython "
                                   "interpreter and the agent, and compose the 8 MiB image.")
    _board(p)
    p.add_argument("--firmware", required=True, metavar="TGZ",
                   help="OpenIPC release, e.g. openipc.ssc337-nor-lite.tgz")
    p.add_argument("--micropython", required=True, metavar="PATH",
                   help="MicroPython 1.22 unix-port executable built for the camera (ARM)")
    _image_options(p)
    p.set_defaults(func=cmd_repack)

    p = sub.add_parser("mpy", help="compile the agent and umqtt to .mpy",
                       description="Compile agent/camagent/*.py and umqtt.simple with "
                                   "mpy-cross 1.22 and print their sizes.")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
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
    p.add_argument("--out", metavar="FILE",
                   help="image to write (default build/camagent-BOARD.bin); the manifest "
                        "goes beside it as .manifest.json")


def _out(args):
    return args.out or os.path.join(repack.ROOT, "build", "camagent-%s.bin" % args.board)


def _report(result):
    print(result.budget.table())
    print("wrote %s and %s" % (result.image, result.manifest))
    if not result.complete:
        print("note: no --bootloader or --backup, so boot and env are erased (0xFF) in this "
              "image and `camhost flash` will refuse it: make it again with --backup FILE "
              "(a backup of this camera from `camhost backup`), or write only its kernel "
              "and rootfs partitions another way (U-Boot: sf write).")
    return 0


def cmd_repack(args):
    result = repack.repack(args.board, args.firmware, args.micropython, _out(args),
                           bootloader=args.bootloader, backup=args.backup,
                           slim_profile=args.slim)
    return _report(result)


def cmd_build(args):
    b = find_board(args.board)
    plan = openipc.plan(args.openipc, b, output=args.output, slim_profile=args.slim,
                        tls=args.tls, jobs=args.jobs)
    if args.dry_run:
        print(openipc.describe(plan))
        return 0
    # Refuse a bad boot source now rather than after an hour of building.
    boot, env, boot_source, env_source = repack.boot_and_env(args.bootloader, args.backup)
    images = openipc.run(plan)
    with open(images["kernel"], "rb") as f:
        kernel = f.read()
    with open(images["rootfs"], "rb") as f:
        rootfs = f.read()
    uimage = parse_uimage(kernel, images["kernel"])
    parse_squashfs(rootfs, images["rootfs"])
    kernel = kernel[:uimage.total_size]

    report = budget.Budget("%s, OpenIPC %s + camagent" % (b.name, b.openipc_board))
    args_sq = repack.squashfs_args(rootfs)
    with tempfile.TemporaryDirectory(prefix="camhost-build-") as tmp:
        target = os.path.join(plan.output, "target")
        installed = openipc.package_files(plan.output, ("camagent", "micropython"))
        for package, paths in sorted(installed.items()):
            present = [p for p in paths if os.path.lexists(os.path.join(target, p))]
            files, raw = slim.walk_files(target, present)
            stage = os.path.join(tmp, package)
            slim.copy_out(target, present, stage)
            os.makedirs(stage, exist_ok=True)
            report.add("package %s" % package, files, raw,
                       repack.squashed_size(stage, args_sq, os.path.join(tmp, "scratch")))
    for item in slim.profile(args.slim):
        report.remove("slim: %s (not built)" % item.name, 0, 0, None,
                      "config: %s; you lose %s" % ("; ".join(item.kconfig + item.linux_config),
                                                   item.loses))
    report.use("kernel", len(kernel), images["kernel"])
    report.use("rootfs", len(rootfs), images["rootfs"])
    if boot is not None:
        report.use("boot", len(boot), boot_source)
    if env is not None:
        report.use("env", len(env), env_source)
    if report.overflows() and args.slim is None:
        report.suggest("--slim %s" % slim.DEFAULT_PROFILE, None,
                       "leaves out " + ", ".join(slim.PROFILES[slim.DEFAULT_PROFILE]))
    report.check()
    manifest = {"board": b.name, "openipc": plan.tree.path, "output": plan.output,
                "slim_profile": args.slim, "tls": args.tls,
                "defconfig": plan.defconfig_path}
    return _report(repack.write_image(_out(args), report, kernel, rootfs, boot, env, manifest))


def cmd_mpy(args):
    if os.path.isdir(args.out):
        for sub in ("camagent", "umqtt"):
            shutil.rmtree(os.path.join(args.out, sub), ignore_errors=True)
    compiled = repack.compile_mpy(args.out)
    with tempfile.TemporaryDirectory(prefix="camhost-mpy-") as tmp:
        xz = repack.squashed_size(args.out, ["-comp", "xz"], tmp)
    print("%-28s %8s %8s" % ("module", ".py", ".mpy"))
    for c in compiled:
        print("%-28s %8d %8d" % (c.target, c.py_bytes, c.mpy_bytes))
    print("%-28s %8d %8d" % ("total", sum(c.py_bytes for c in compiled),
                             sum(c.mpy_bytes for c in compiled)))
    print("in a squashfs (xz): %s bytes" % budget.fmt(xz))
    print("wrote %d files to %s" % (len(compiled), args.out))
    return 0


def cmd_budget(args):
    try:
        with open(args.image, "rb") as f:
            blob = f.read(layout.FLASH_SIZE + 1)
    except OSError as e:
        raise CamhostError("%s: %s" % (args.image, e.strerror)) from None
    if len(blob) != layout.FLASH_SIZE:
        raise CamhostError("%s is %d bytes; a full image is exactly %d bytes (8 MiB)"
                           % (args.image, len(blob), layout.FLASH_SIZE))
    report = budget.Budget(args.image)
    for name, parse in (("kernel", parse_uimage), ("rootfs", parse_squashfs)):
        try:
            found = parse(layout.slice_of(blob, name), name)
        except FormatError as e:
            raise CamhostError("%s: %s" % (args.image, e)) from None
        used = found.total_size if name == "kernel" else found.bytes_used
        report.use(name, used, "uImage %r" % found.name if name == "kernel"
                   else "squashfs, %s, %d-byte blocks" % (found.compression, found.block_size))
    for name in ("boot", "env", "rootfs_data"):
        data = layout.slice_of(blob, name)
        used = len(data.rstrip(b"\xff"))
        if used:
            report.use(name, used, "content up to the last non-0xFF byte")
    print(report.table())
    return 0
