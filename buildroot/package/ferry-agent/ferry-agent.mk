################################################################################
#
# ferry-agent
#
################################################################################

FERRY_AGENT_VERSION = $(FERRY_VERSION)
FERRY_AGENT_SITE = $(FERRY_WORKSPACE)
FERRY_AGENT_SITE_METHOD = local
FERRY_AGENT_SUBDIR = agent
FERRY_AGENT_LICENSE = MIT, BSD-2-Clause (jemalloc)
FERRY_AGENT_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = $(FERRY_RSYNC_EXCLUSIONS)
FERRY_AGENT_DEPENDENCIES = host-ferry-image
FERRY_AGENT_PRE_CONFIGURE_HOOKS += FERRY_CARGO_VENDOR
FERRY_AGENT_CARGO_BUILD_OPTS = --bins

define FERRY_AGENT_INSTALL_TARGET_CMDS
	$(call FERRY_INSTALL_BINARIES,ferry)
endef

$(eval $(cargo-package))
