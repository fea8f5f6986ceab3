"""Small helpers shared by the benchmark modules."""

import glob
import os
import subprocess


class BenchError(Exception):
    """A failure that stops the benchmark, with a message saying why."""


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def apt_download(package, cache):
    """Downloads a Debian package into `cache` (once) and returns its path."""
    found = glob.glob(os.path.join(cache, f"{package}_*.deb"))
    if found:
        return found[0]
    subprocess.run(["apt-get", "download", "-q", package], cwd=cache, check=True,
                   stdout=subprocess.DEVNULL)
    found = glob.glob(os.path.join(cache, f"{package}_*.deb"))
    if not found:
        raise BenchError(f"apt-get download {package} produced no package")
    return found[0]
