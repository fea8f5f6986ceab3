################################################################################
#
# host-ferry-image: ferry-image and ferry-ovf for the build machine
#
################################################################################

FERRY_IMAGE_VERSION = $(FERRY_VERSION)
FERRY_IMAGE_SITE = $(FERRY_WORKSPACE)
FERRY_IMAGE_SITE_METHOD = local
FERRY_IMAGE_LICENSE = MIT
HOST_FERRY_IMAGE_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = $(FERRY_RSYNC_EXCLUSIONS)
HOST_FERRY_IMAGE_PRE_CONFIGURE_HOOKS += FERRY_CARGO_VENDOR
# from the workspace root: both tools in one build
HOST_FERRY_IMAGE_CARGO_BUILD_OPTS = -p ferry-image -p ferry-ovf

define HOST_FERRY_IMAGE_INSTALL_CMDS
	$(INSTALL) -D -m 0755 $(@D)/target/release/ferry-image $(HOST_DIR)/bin/ferry-image
	$(INSTALL) -D -m 0755 $(@D)/target/release/ferry-ovf $(HOST_DIR)/bin/ferry-ovf
endef

$(eval $(host-cargo-package))
