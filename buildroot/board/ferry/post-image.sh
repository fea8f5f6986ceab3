#!/usr/bin/env bash
# Buildroot post-image script (BR2_ROOTFS_POST_IMAGE_SCRIPT).
# Makes the appliance disk and the OVA with the tools and the manifest of
# the offline build (scripts/build-image): the file list, the hardening
# checks, the partition layout, dm-verity, the UKI and the OVF all live
# there, none of it here.
#   $1: BINARIES_DIR; environment: HOST_DIR, TARGET_DIR, BUILD_DIR,
#   BR2_EXTERNAL_FERRY_PATH
set -euo pipefail

images=${1:?usage: post-image.sh BINARIES_DIR}
workspace=$(realpath "$BR2_EXTERNAL_FERRY_PATH/..")

# the kernel's final .config (checked against the manifest's [kconfig])
shopt -s nullglob
configs=("$BUILD_DIR"/linux-[0-9]*/.config)
if [[ ${#configs[@]} -ne 1 ]]; then
    echo "post-image: expected one kernel build in $BUILD_DIR, found ${#configs[@]}" >&2
    exit 1
fi

"$HOST_DIR/bin/ferry-image" assemble \
    --manifest "$workspace/image/manifest.toml" \
    --target-dir "$TARGET_DIR" \
    --kernel "$images/bzImage" \
    --kernel-config "${configs[0]}" \
    --out "$images"

"$HOST_DIR/bin/ferry-ovf" \
    --image "$images/ferry.raw" \
    --out "$images/ferry.ova" \
    --work "$images/work/ova"
