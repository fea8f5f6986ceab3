"""After every run: does the destination hold the source? A tool that
skipped work cannot win."""

import hashlib
import os


def _digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = os.lstat(p)
    return out


def differences(src, dst, limit=5):
    """Up to `limit` ways dst differs from src: names, sizes, whole-second
    modification times and content of regular files."""
    a, b = _files(src), _files(dst)
    diffs = [f"missing {p}" for p in sorted(a.keys() - b.keys())]
    diffs += [f"extra {p}" for p in sorted(b.keys() - a.keys())]
    for p in sorted(a.keys() & b.keys()):
        if len(diffs) >= limit:
            break
        x, y = a[p], b[p]
        if x.st_size != y.st_size:
            diffs.append(f"size {p}")
        elif int(x.st_mtime) != int(y.st_mtime):
            diffs.append(f"mtime {p}")
        elif _digest(os.path.join(src, p)) != _digest(os.path.join(dst, p)):
            diffs.append(f"content {p}")
    return diffs[:limit]
