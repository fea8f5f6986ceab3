################################################################################
#
# Ferry: the appliance built from the project's Cargo workspace (the
# directory above this tree) and described by image/manifest.toml.
#
################################################################################

FERRY_WORKSPACE = $(realpath $(BR2_EXTERNAL_FERRY_PATH)/..)
FERRY_MANIFEST = $(FERRY_WORKSPACE)/image/manifest.toml
# the workspace version, for legal-info and show-info
FERRY_VERSION = $(shell sed -n 's/^version = "\(.*\)"/\1/p' $(FERRY_WORKSPACE)/Cargo.toml | head -n 1)

# What the workspace's packages do not copy into their build directory.
FERRY_RSYNC_EXCLUSIONS = \
	--exclude=/target --exclude=/out --exclude=/buildroot/output \
	--exclude=/.cargo

# A local-source cargo package gets no download step, so nothing vendors
# its crates: do it before configuring, into the download directory (kept
# per Cargo.lock, so offline rebuilds and `make source` share it).
define FERRY_CARGO_VENDOR
	$(HOST_MAKE_ENV) CARGO_HOME=$(BR_CARGO_HOME) \
		$(BR2_EXTERNAL_FERRY_PATH)/support/cargo-vendor $(DL_DIR) $(@D)
endef

FERRY_CARGO_PROFILE = $(if $(BR2_ENABLE_DEBUG),debug,release)

# $(1): cargo package. Installs its binaries where image/manifest.toml puts
# them (`ferry-image install-list`), so the two builds cannot disagree.
define FERRY_INSTALL_BINARIES
	list=$$($(HOST_DIR)/bin/ferry-image install-list \
		--manifest $(FERRY_MANIFEST) --package $(1)) || exit 1; \
	echo "$$list" | while read -r bin dest; do \
		$(INSTALL) -D -m 0755 \
			$(@D)/target/$(RUSTC_TARGET_NAME)/$(FERRY_CARGO_PROFILE)/$$bin \
			$(TARGET_DIR)$$dest || exit 1; \
	done
endef

include $(sort $(wildcard $(BR2_EXTERNAL_FERRY_PATH)/package/*/*.mk))

# `make source` also fills the vendored crates, for offline rebuilds.
.PHONY: ferry-vendor
ferry-vendor: host-rustc
	$(HOST_MAKE_ENV) CARGO_HOME=$(BR_CARGO_HOME) \
		$(BR2_EXTERNAL_FERRY_PATH)/support/cargo-vendor $(DL_DIR) $(FERRY_WORKSPACE) --no-config
source: ferry-vendor
