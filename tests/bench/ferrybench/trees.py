"""Source trees for the workloads, generated deterministically from a seed."""

import math
import os
import random

MIB = 1 << 20


def _write(path, size, rng):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MIB)
            f.write(rng.randbytes(n))
            left -= n


def small(root, files=1000, dirs=20, size=4096, seed=1):
    """`files` files of `size` bytes spread over `dirs` directories."""
    rng = random.Random(seed)
    for d in range(dirs):
        os.makedirs(os.path.join(root, f"dir{d:03}"), exist_ok=True)
    for i in range(files):
        _write(os.path.join(root, f"dir{i % dirs:03}", f"file{i:06}"), size, rng)


def large(root, files=4, size=256 * MIB, seed=2):
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    for i in range(files):
        _write(os.path.join(root, f"large{i}.bin"), size, rng)


def mixed(root, files=300, dirs=10, median=64 * 1024, sigma=2.0, cap=64 * MIB, seed=3):
    """Log-normal sizes: mostly small files, a few large ones."""
    rng = random.Random(seed)
    for d in range(dirs):
        os.makedirs(os.path.join(root, f"dir{d:02}"), exist_ok=True)
    for i in range(files):
        size = min(cap, int(rng.lognormvariate(math.log(median), sigma)))
        _write(os.path.join(root, f"dir{i % dirs:02}", f"f{i:05}"), size, rng)


def tree_size(root):
    files = total = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            files += 1
            total += os.lstat(os.path.join(dirpath, n)).st_size
    return files, total
