#!/usr/bin/env python3
"""Compare a source directory with a mounted image of it, path by path.

Usage: compare-trees.py SOURCE MOUNTED [--all-root] [--clamp EPOCH]

Checks every path's type, mode, uid, gid, size, nlink, mtime (ns), rdev,
xattrs, symlink target and content (data segments via SEEK_DATA/SEEK_HOLE,
so sparse files compare quickly), and that sparse files stay sparse.
--all-root expects every owner to be 0:0; --clamp expects mtimes clamped to
EPOCH (SOURCE_DATE_EPOCH). A lost+found the source lacks is ignored.
Prints each difference and exits 1 if there is any.
"""

import os
import stat
import sys

NS = 1_000_000_000


def walk(root):
    """Relative path -> lstat result, for everything under root."""
    out = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        full = os.path.join(root, rel) if rel else root
        for name in os.listdir(full):
            r = os.path.join(rel, name) if rel else name
            st = os.lstat(os.path.join(root, r))
            out[r] = st
            if stat.S_ISDIR(st.st_mode):
                stack.append(r)
    return out


def xattrs(path):
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in names}


def segments(fd, size):
    """Data segments of an open file, by SEEK_DATA/SEEK_HOLE."""
    segs, pos = [], 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:
            break
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        segs.append((start, end))
        pos = end
    return segs


def union(a, b):
    out = []
    for s, e in sorted(a + b):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def same_content(a, b, size):
    """Compares two files' bytes over the union of their data segments;
    elsewhere both read as zeros. Returns (equal, bytes of the blocks that
    hold a's data)."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        sa = segments(fa.fileno(), size)
        sb = segments(fb.fileno(), size)
        for s, e in union(sa, sb):
            pos = s
            while pos < e:
                n = min(e - pos, 1 << 20)
                if os.pread(fa.fileno(), n, pos) != os.pread(fb.fileno(), n, pos):
                    return False, 0
                pos += n
        return True, sum((-(-e // 4096) - s // 4096) * 4096 for s, e in sa)


def main():
    args = sys.argv[1:]
    all_root = "--all-root" in args
    clamp = None
    if "--clamp" in args:
        clamp = int(args[args.index("--clamp") + 1])
    pos = [a for i, a in enumerate(args) if not a.startswith("--") and (i == 0 or args[i - 1] != "--clamp")]
    if len(pos) != 2:
        sys.exit(__doc__)
    src, img = pos
    s, m = walk(src), walk(img)
    diffs = []

    if "lost+found" not in s:
        m.pop("lost+found", None)
    for p in sorted(set(s) ^ set(m)):
        diffs.append(f"{p}: only in {'source' if p in s else 'image'}")

    subdirs = {}
    for p, st in s.items():
        if stat.S_ISDIR(st.st_mode):
            parent = os.path.dirname(p)
            subdirs[parent] = subdirs.get(parent, 0) + 1
    image_root_extra = 1 if "lost+found" not in s else 0

    for p in sorted(set(s) & set(m)):
        a, b = s[p], m[p]
        sp, mp = os.path.join(src, p), os.path.join(img, p)

        def check(what, want, got):
            if want != got:
                diffs.append(f"{p}: {what} {got!r}, expected {want!r}")

        check("mode", oct(a.st_mode), oct(b.st_mode))
        check("uid", 0 if all_root else a.st_uid, b.st_uid)
        check("gid", 0 if all_root else a.st_gid, b.st_gid)
        want_ns = a.st_mtime_ns
        if clamp is not None and want_ns > clamp * NS:
            want_ns = clamp * NS
        check("mtime_ns", want_ns, b.st_mtime_ns)
        check("xattrs", xattrs(sp), xattrs(mp))
        if stat.S_ISDIR(a.st_mode):
            check("nlink", 2 + subdirs.get(p, 0), b.st_nlink)
            continue
        check("nlink", a.st_nlink, b.st_nlink)
        check("size", a.st_size, b.st_size)
        if stat.S_ISLNK(a.st_mode):
            check("target", os.readlink(sp), os.readlink(mp))
        elif stat.S_ISCHR(a.st_mode) or stat.S_ISBLK(a.st_mode):
            check("rdev", (os.major(a.st_rdev), os.minor(a.st_rdev)), (os.major(b.st_rdev), os.minor(b.st_rdev)))
        elif stat.S_ISREG(a.st_mode) and a.st_size == b.st_size:
            equal, data = same_content(sp, mp, a.st_size)
            if not equal:
                diffs.append(f"{p}: content differs")
            # Holes stay holes: the image allocates the data's blocks plus a
            # few extent-tree blocks.
            allocated = b.st_blocks * 512
            if a.st_blocks * 512 < a.st_size and allocated > data + 16 * 4096:
                diffs.append(f"{p}: {allocated} bytes allocated for {data} bytes of data")

    root_want = 2 + subdirs.get("", 0) + image_root_extra
    if os.lstat(img).st_nlink != root_want:
        diffs.append(f"/: nlink {os.lstat(img).st_nlink}, expected {root_want}")
    if os.lstat(src).st_mode != os.lstat(img).st_mode:
        diffs.append("/: mode differs")

    for d in diffs[:200]:
        print(d)
    if diffs:
        print(f"compare-trees: {len(diffs)} differences", file=sys.stderr)
        sys.exit(1)
    print(f"compare-trees: {len(s)} paths identical")


if __name__ == "__main__":
    main()
