#!/usr/bin/env bash
# Buildroot post-build script (BR2_ROOTFS_POST_BUILD_SCRIPT).
# Refuses to go on when this tree and image/manifest.toml have drifted
# apart (kernel fragment, packages, scripts): the same check as
# `scripts/check-buildroot` and the ferry-image tests.
#   $1: TARGET_DIR; environment: HOST_DIR, BR2_EXTERNAL_FERRY_PATH
set -euo pipefail

target=${1:?usage: post-build.sh TARGET_DIR}
workspace=$(realpath "$BR2_EXTERNAL_FERRY_PATH/..")

"$HOST_DIR/bin/ferry-image" check-buildroot \
    --manifest "$workspace/image/manifest.toml" --tree "$BR2_EXTERNAL_FERRY_PATH"

# ferry-init is the init (BR2_INIT_NONE); its package links /sbin/init
if [[ ! -e $target/sbin/init ]]; then
    echo "post-build: $target/sbin/init is missing (is BR2_PACKAGE_FERRY_INIT on?)" >&2
    exit 1
fi
