# What BR2_PACKAGE_CAMAGENT_FROZEN freezes into the micropython interpreter:
# the agent from this tree and micropython-lib's umqtt.simple, the same two
# packages the .mpy path installs. external.mk sets $(CAMAGENT_AGENT)
# (MICROPY_MANIFEST_CAMAGENT_AGENT).
package("camagent", base_path="$(CAMAGENT_AGENT)")
require("umqtt.simple")
