################################################################################
#
# camagent
#
################################################################################

CAMAGENT_VERSION = 0.1.0
CAMAGENT_LICENSE = MIT
CAMAGENT_LICENSE_FILES = LICENSE
# The project this BR2_EXTERNAL tree is part of; only the agent and the
# overlay (and LICENSE, for legal-info) are copied into the build directory.
CAMAGENT_SITE = $(BR2_EXTERNAL_CAMAGENT_PATH)/..
CAMAGENT_SITE_METHOD = local
CAMAGENT_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--include='/agent/***' --include='/overlay/***' --include='/LICENSE' \
	--exclude='/*'
# For its mpy-cross and its copy of micropython-lib's umqtt.simple.
CAMAGENT_DEPENDENCIES = micropython

CAMAGENT_BOARD = $(call qstrip,$(BR2_PACKAGE_CAMAGENT_BOARD))
# Buildroot's micropython package builds mpy-cross but does not install it.
CAMAGENT_MPY_CROSS = $(MICROPYTHON_DIR)/mpy-cross/build/mpy-cross
CAMAGENT_UMQTT_SIMPLE = \
	$(MICROPYTHON_DIR)/lib/micropython-lib/micropython/umqtt.simple/umqtt/simple.py
# -O3 leaves the line numbers out of the bytecode (a tenth of its flash, and heap);
# tracebacks still name file and function. `make CAMAGENT_MPY_OPTS=` keeps them.
# camhost's repack uses the same options (camhost/repack.py MPY_OPTS).
CAMAGENT_MPY_OPTS = -O3

# BR2_PACKAGE_CAMAGENT_FROZEN: micropython has the agent frozen in (external.mk),
# so there is nothing to compile or install here.
ifneq ($(BR2_PACKAGE_CAMAGENT_FROZEN),y)
define CAMAGENT_BUILD_CMDS
	rm -rf $(@D)/mpy
	mkdir -p $(@D)/mpy/camagent $(@D)/mpy/umqtt
	cd $(@D)/agent && for src in camagent/*.py; do \
		$(CAMAGENT_MPY_CROSS) $(CAMAGENT_MPY_OPTS) -s $$src \
			-o $(@D)/mpy/$${src%.py}.mpy $$src || exit 1; \
	done
	$(CAMAGENT_MPY_CROSS) $(CAMAGENT_MPY_OPTS) -s umqtt/simple.py \
		-o $(@D)/mpy/umqtt/simple.mpy $(CAMAGENT_UMQTT_SIMPLE)
endef

define CAMAGENT_INSTALL_MPY
	$(INSTALL) -d -m 0755 $(TARGET_DIR)/usr/lib/micropython/camagent
	$(INSTALL) -m 0644 -t $(TARGET_DIR)/usr/lib/micropython/camagent \
		$(@D)/mpy/camagent/*.mpy
	$(INSTALL) -D -m 0644 $(@D)/mpy/umqtt/simple.mpy \
		$(TARGET_DIR)/usr/lib/micropython/umqtt/simple.mpy
endef
endif

define CAMAGENT_INSTALL_TARGET_CMDS
	$(CAMAGENT_INSTALL_MPY)
	$(INSTALL) -D -m 0644 $(@D)/overlay/etc/camagent.json \
		$(TARGET_DIR)/etc/camagent.json
	$(SED) 's/"board": "[^"]*"/"board": "$(CAMAGENT_BOARD)"/' \
		$(TARGET_DIR)/etc/camagent.json
	$(INSTALL) -D -m 0755 $(@D)/overlay/etc/wireless/usb-camagent \
		$(TARGET_DIR)/etc/wireless/usb-camagent
	$(INSTALL) -D -m 0755 $(@D)/overlay/usr/sbin/camagent-local \
		$(TARGET_DIR)/usr/sbin/camagent-local
	$(INSTALL) -D -m 0755 $(@D)/overlay/usr/sbin/motion.sh \
		$(TARGET_DIR)/usr/sbin/motion.sh
endef

ifeq ($(BR2_PACKAGE_CAMAGENT_ONVIF),y)
# Installed after onvif-simple-server, whose own /etc/onvif.conf this replaces.
CAMAGENT_DEPENDENCIES += onvif-simple-server
define CAMAGENT_INSTALL_ONVIF_CONF
	$(INSTALL) -D -m 0644 $(@D)/overlay/etc/onvif.conf \
		$(TARGET_DIR)/etc/onvif.conf
endef
CAMAGENT_POST_INSTALL_TARGET_HOOKS += CAMAGENT_INSTALL_ONVIF_CONF
endif

define CAMAGENT_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(CAMAGENT_PKGDIR)/S96camagent \
		$(TARGET_DIR)/etc/init.d/S96camagent
	$(INSTALL) -D -m 0755 $(@D)/overlay/etc/init.d/S34boardpower \
		$(TARGET_DIR)/etc/init.d/S34boardpower
	$(INSTALL) -D -m 0755 $(@D)/overlay/etc/init.d/S94majestic-pins \
		$(TARGET_DIR)/etc/init.d/S94majestic-pins
endef

$(eval $(generic-package))
