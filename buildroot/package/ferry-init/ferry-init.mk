################################################################################
#
# ferry-init
#
################################################################################

FERRY_INIT_VERSION = $(FERRY_VERSION)
FERRY_INIT_SITE = $(FERRY_WORKSPACE)
FERRY_INIT_SITE_METHOD = local
FERRY_INIT_SUBDIR = init
FERRY_INIT_LICENSE = GPL-2.0-only
FERRY_INIT_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = $(FERRY_RSYNC_EXCLUSIONS)
# ferry-image tells where the binaries go
FERRY_INIT_DEPENDENCIES = host-ferry-image
FERRY_INIT_PRE_CONFIGURE_HOOKS += FERRY_CARGO_VENDOR
FERRY_INIT_CARGO_BUILD_OPTS = --bin ferry-init

define FERRY_INIT_INSTALL_TARGET_CMDS
	$(call FERRY_INSTALL_BINARIES,ferry-init)
	ln -sf ferry-init $(TARGET_DIR)/usr/sbin/init
endef

$(eval $(cargo-package))
