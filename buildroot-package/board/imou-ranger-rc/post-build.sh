#!/bin/sh
#
# Buildroot post-build script (BR2_ROOTFS_POST_BUILD_SCRIPT), also run by
# `camhost image repack` on the unpacked rootfs: $1 is the target directory.
#
# OpenIPC's /etc/wireless/usb knows no IMOU Ranger RC. Add one line at its
# top that hands our wlandev names to /etc/wireless/usb-camagent (camagent
# installs it); every other name falls through to OpenIPC's cases as
# before. Runs after the rootfs overlays, which would undo an earlier edit.

set -e
TARGET_DIR="$1"
USB="$TARGET_DIR/etc/wireless/usb"
# shellcheck disable=SC2016  # the line is written, not run, here
HOOK='"${0%/*}/usb-camagent" "$1" && exit 0    # camagent: IMOU Ranger RC wifi'

if [ -z "$TARGET_DIR" ] || [ ! -d "$TARGET_DIR" ]; then
	echo "usage: $0 TARGET_DIR" >&2
	exit 2
fi
if [ ! -f "$USB" ]; then
	echo "$0: $USB not found: not an OpenIPC rootfs; wifi would not come up" >&2
	exit 1
fi
if [ ! -x "$TARGET_DIR/etc/wireless/usb-camagent" ]; then
	echo "$0: $TARGET_DIR/etc/wireless/usb-camagent is missing" >&2
	exit 1
fi
grep -qF "$HOOK" "$USB" && exit 0
# after the first line (#!/bin/sh), before any case
{
	head -n 1 "$USB"
	printf '%s\n' "$HOOK"
	tail -n +2 "$USB"
} > "$USB.new"
chmod --reference="$USB" "$USB.new" 2>/dev/null || chmod 0755 "$USB.new"
mv "$USB.new" "$USB"
