# OpenIPC's general tree uses $(BR2_EXTERNAL) as its own path, in its
# external.mk and in the strings of its defconfigs; that only holds while
# it is the only br2-external tree. So list this tree first
# (BR2_EXTERNAL=<this tree>:<openipc>/general): this file is then read
# before general's, and points BR2_EXTERNAL back at general for the rest.
ifneq ($(BR2_EXTERNAL_GENERAL_PATH),)
override BR2_EXTERNAL := $(BR2_EXTERNAL_GENERAL_PATH)
endif

include $(sort $(wildcard $(BR2_EXTERNAL_CAMAGENT_PATH)/package/*/*.mk))
