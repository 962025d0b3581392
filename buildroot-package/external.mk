# OpenIPC's general tree uses $(BR2_EXTERNAL) as its own path, in its
# external.mk and in the strings of its defconfigs; that only holds while
# it is the only br2-external tree. So list this tree first
# (BR2_EXTERNAL=<this tree>:<openipc>/general): this file is then read
# before general's, and points BR2_EXTERNAL back at general for the rest.
ifneq ($(BR2_EXTERNAL_GENERAL_PATH),)
override BR2_EXTERNAL := $(BR2_EXTERNAL_GENERAL_PATH)
endif

include $(sort $(wildcard $(BR2_EXTERNAL_CAMAGENT_PATH)/package/*/*.mk))

# BR2_PACKAGE_CAMAGENT_FROZEN: Buildroot's micropython freezes the agent and
# umqtt.simple (package/camagent/manifest.py), reading the agent straight from
# this tree, with the mpy-cross options of the .mpy path (CAMAGENT_MPY_OPTS);
# camagent.mk then installs no .mpy files.
ifeq ($(BR2_PACKAGE_CAMAGENT_FROZEN),y)
MICROPYTHON_MAKE_OPTS += \
	FROZEN_MANIFEST=$(BR2_EXTERNAL_CAMAGENT_PATH)/package/camagent/manifest.py \
	MICROPY_MANIFEST_CAMAGENT_AGENT=$(BR2_EXTERNAL_CAMAGENT_PATH)/../agent \
	MPY_CROSS_FLAGS="$(CAMAGENT_MPY_OPTS)"
endif
