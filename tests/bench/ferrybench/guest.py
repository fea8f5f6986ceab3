"""The test guest: Debian's cloud kernel (the appliance's kernel) booted
under QEMU/TCG with an initramfs holding busybox, the NFS client modules,
netem, every tool under test with its libraries, and a run plan."""

import glob
import os
import re
import shutil
import subprocess
import time

from . import util

# Load order from modules.dep (see the project's field notes).
MODULES = [
    "virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
    "failover", "net_failover", "virtio_net", "sunrpc", "grace", "lockd", "netfs", "fscache",
    "nfs", "nfs_acl", "nfsv3", "dns_resolver", "nfsv4", "sch_netem",
]

# Host binaries copied into the guest with their shared libraries.
HOST_TOOLS = [
    "/usr/bin/cp", "/usr/bin/rsync", "/usr/bin/rclone", "/usr/bin/fpart", "/usr/bin/fpsync",
    "/usr/sbin/tc", "/usr/bin/date", "/usr/bin/dd",
    # fpsync is a POSIX shell script that checks its jobs with `ps PID`: it
    # needs procps' ps and a shell that looks commands up in PATH (busybox's
    # own shell runs its applets first).
    "/usr/bin/dash", "/usr/bin/ps",
]

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/bin:/bin HOME=/root RCLONE_CONFIG=/dev/null
mkdir -p /root /tmp/fpsync
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
for m in @MODULES@; do insmod /lib/modules/$m.ko || echo "BENCH-ERROR insmod $m"; done
ip link set lo up; ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
echo BENCH-BOOTED
sh /plan.sh
echo BENCH-DONE
sync
poweroff -f
"""


def kernel(cache):
    """Downloads Debian's cloud kernel (once) and returns (vmlinuz, modules dir)."""
    os.makedirs(cache, exist_ok=True)
    root = os.path.join(cache, "kernel")
    found = glob.glob(os.path.join(root, "boot", "vmlinuz-*"))
    if not found:
        meta = util.apt_download("linux-image-cloud-amd64", cache)
        depends = subprocess.run(["dpkg-deb", "-f", meta, "Depends"], check=True,
                                 capture_output=True, text=True).stdout
        name = re.search(r"(linux-image-[0-9][^\s,(]*)", depends).group(1)
        deb = util.apt_download(name, cache)
        subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
        found = glob.glob(os.path.join(root, "boot", "vmlinuz-*"))
    vmlinuz = found[0]
    version = os.path.basename(vmlinuz)[len("vmlinuz-"):]
    return vmlinuz, os.path.join(root, "lib", "modules", version)


def _libraries(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    return re.findall(r"(/[^\s]+) \(0x", out)


def build_initramfs(work, cache, ferry, plan):
    """Writes work/initrd.img with the tools, `ferry` and the plan script."""
    vmlinuz, moddir = kernel(cache)
    root = os.path.join(work, "initramfs")
    shutil.rmtree(root, ignore_errors=True)
    for d in ["bin", "usr/bin", "lib/modules", "proc", "sys", "dev", "tmp", "mnt/src", "mnt/dst", "etc"]:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    shutil.copy("/bin/busybox", os.path.join(root, "bin/busybox"))
    for m in MODULES:
        found = glob.glob(os.path.join(moddir, "kernel", "**", m + ".ko*"), recursive=True)
        if not found:
            raise util.BenchError(f"kernel module {m} not found under {moddir}")
        shutil.copy(found[0], os.path.join(root, "lib/modules", m + ".ko"))
    for tool in HOST_TOOLS:
        if not os.path.exists(tool):
            raise util.BenchError(f"{tool} is missing: run scripts/setup")
        shutil.copy(tool, os.path.join(root, "usr/bin", os.path.basename(tool)))
        for lib in _libraries(tool):
            dest = os.path.join(root, lib.lstrip("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy(lib, dest)
    shutil.copy(ferry, os.path.join(root, "usr/bin/ferry"))
    with open(os.path.join(root, "etc/passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(root, "etc/group"), "w") as f:
        f.write("root:x:0:\n")
    init = INIT.replace("@MODULES@", " ".join(MODULES))
    util.write(os.path.join(root, "init"), init, 0o755)
    util.write(os.path.join(root, "plan.sh"), plan, 0o755)
    image = os.path.join(work, "initrd.img")
    with open(image, "wb") as out:
        find = subprocess.Popen(["find", "."], cwd=root, stdout=subprocess.PIPE)
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, stdin=find.stdout,
                       stdout=out, check=True)
        find.wait()
    return vmlinuz, image


def run(vmlinuz, initrd, log_path, on_line, memory_mib=3072, timeout=4 * 3600):
    """Boots the guest; calls on_line(line) for each console line; returns
    when the guest powers off."""
    cmd = [
        "qemu-system-x86_64", "-accel", "tcg", "-smp", "2", "-m", str(memory_mib),
        "-nographic", "-no-reboot", "-kernel", vmlinuz, "-initrd", initrd,
        "-append", "console=ttyS0 quiet panic=-1",
        "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0",
    ]
    start = time.monotonic()
    with open(log_path, "w", errors="replace") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                log.write(line + "\n")
                log.flush()
                on_line(line)
                if time.monotonic() - start > timeout:
                    raise util.BenchError(f"the guest ran longer than {timeout} s")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
