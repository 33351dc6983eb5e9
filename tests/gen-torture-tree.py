#!/usr/bin/env python3
"""Generate the ext4 writer's torture tree (issue 3's acceptance list).

Usage: gen-torture-tree.py OUT_DIR

Makes, under OUT_DIR (which must not exist or be empty):
  * >= 20,000 regular files, one directory with 12,000 entries,
    a directory chain 32 levels deep;
  * names of 1 and 255 bytes, UTF-8 names (also a 255-byte UTF-8 name);
  * files of 0, 1, 4095, 4096, 4097 and 1 MiB + 1 bytes, a 5 GiB sparse file
    with data at its start, middle and end, a fragmented file needing an
    extent tree;
  * hard links across directories, fast and slow symlinks (up to 4095
    bytes), a fifo, a socket;
  * setuid/setgid/sticky modes, user.* xattrs (in-inode, in a block, shared
    blocks), mtimes before 1970 and after 2038 with nanoseconds;
  * as root only: char and block devices, varied 32-bit owners,
    security.capability, trusted.* and POSIX ACLs. Without root these are
    skipped with a message on stderr.

Everything is deterministic, so two runs give identical trees.
"""

import os
import socket
import stat
import struct
import sys

ROOT = os.geteuid() == 0
NS = 1_000_000_000


def skip(what):
    print(f"gen-torture-tree: skipping {what} (needs root)", file=sys.stderr)


def content(i, size):
    """Deterministic, never-zero bytes for file number i."""
    if size == 0:
        return b""
    unit = f"file {i:06d} of the slate torture tree\n".encode()
    reps = size // len(unit) + 1
    return (unit * reps)[:size]


def write(path, data, mode=0o644):
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def set_mtime(path, ns):
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    if os.listdir(out):
        sys.exit(f"gen-torture-tree: {out} is not empty")
    os.umask(0)
    os.chdir(out)
    file_no = 0
    mtimes = {}  # path -> mtime in ns, applied at the end (after all writes)

    # One directory with 12,000 entries of varied name lengths.
    os.mkdir("big", 0o755)
    for i in range(12_000):
        name = f"entry-{i:05d}" + "x" * (i % 40)
        write(f"big/{name}", content(file_no, 20 + i % 300))
        file_no += 1

    # 85 directories of 100 files each.
    for d in range(85):
        dpath = f"tree/d{d:02d}"
        os.makedirs(dpath, 0o755, exist_ok=True)
        for i in range(100):
            write(f"{dpath}/f{i:03d}.txt", content(file_no, (i * 37) % 2000))
            file_no += 1

    # A chain 32 directories deep, a file at the bottom.
    deep = "deep/" + "/".join(f"level{i:02d}" for i in range(1, 33))
    os.makedirs(deep, 0o755)
    write(f"{deep}/bottom", b"the bottom\n")

    # Names: 1 byte, 255 bytes, UTF-8.
    os.mkdir("names", 0o755)
    write("names/a", b"one-byte name\n")
    write("names/" + "N" * 255, b"255-byte name\n")
    write("names/ünïcödé-名前-😀.txt", "utf-8 name\n".encode())
    long_utf8 = "é" * 127 + "x"  # 127 * 2 + 1 = 255 bytes
    assert len(long_utf8.encode()) == 255
    write("names/" + long_utf8, b"255-byte utf-8 name\n")

    # Boundary sizes.
    os.mkdir("sizes", 0o755)
    for size in (0, 1, 4095, 4096, 4097, (1 << 20) + 1):
        write(f"sizes/size-{size}", content(size, size))

    # A 5 GiB sparse file with data at its start, middle and end.
    with open("sizes/sparse-5g", "wb") as f:
        f.write(content(1, 4096))
        f.seek(5 << 29)  # 2.5 GiB
        f.write(content(2, 65536))
        f.truncate((5 << 30) + 123)
        f.seek((5 << 30) + 123 - 100)
        f.write(content(3, 100))
    # A fragmented file: 600 data pieces between holes (needs an extent tree).
    with open("sizes/fragmented", "wb") as f:
        for i in range(600):
            f.seek(i * 3 * 4096)
            f.write(content(i, 4096 + 1))

    # Hard links across directories (a file and a symlink).
    os.makedirs("links/a", 0o755)
    os.makedirs("links/b", 0o755)
    write("links/a/original", b"hard-linked three times\n")
    os.link("links/a/original", "links/b/second")
    os.link("links/a/original", "tree/d07/third")
    os.symlink("original", "links/a/symlink")
    os.link("links/a/symlink", "links/b/symlink-hardlink", follow_symlinks=False)

    # Symlinks: fast (< 60 bytes), slow, the 59/60 boundary, 4095 bytes.
    os.mkdir("symlinks", 0o755)
    os.symlink("../sizes/size-1", "symlinks/fast")
    os.symlink("t" * 59, "symlinks/len-59")
    os.symlink("t" * 60, "symlinks/len-60")
    os.symlink("../" + "s/" * 100 + "target", "symlinks/slow")
    os.symlink((("m" * 200 + "/") * 21)[:4095], "symlinks/len-4095")
    os.symlink("/nonexistent/dangling", "symlinks/dangling")
    os.symlink("../deep", "symlinks/to-dir")

    # Special files.
    os.mkdir("special", 0o755)
    os.mkfifo("special/fifo", 0o640)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind("special/socket")
    sock.close()
    if ROOT:
        os.mknod("special/char-1-3", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod("special/char-big", 0o600 | stat.S_IFCHR, os.makedev(4000, 1000000))
        os.mknod("special/block-8-1", 0o660 | stat.S_IFBLK, os.makedev(8, 1))
        os.mknod("special/block-259-300", 0o660 | stat.S_IFBLK, os.makedev(259, 300))
    else:
        skip("char and block devices")

    # Modes.
    os.mkdir("modes", 0o755)
    write("modes/setuid", b"#!/bin/sh\n", 0o4755)
    write("modes/setgid", b"#!/bin/sh\n", 0o2755)
    write("modes/all-bits", b"x\n", 0o7777)
    write("modes/odd", b"x\n", 0o641)
    os.mkdir("modes/sticky", 0o1777)
    os.mkdir("modes/setgid-dir", 0o2775)
    if ROOT:
        write("modes/none", b"unreadable to others\n", 0o000)

    # Owners (32-bit ids).
    if ROOT:
        os.mkdir("owners", 0o755)
        for uid, gid in ((1000, 1000), (65534, 65534), (100000, 200000), (4000000000, 4000000001)):
            p = f"owners/u{uid}-g{gid}"
            write(p, f"{uid}:{gid}\n".encode())
            os.chown(p, uid, gid)
        os.symlink("u1000-g1000", "owners/link-owned")
        os.chown("owners/link-owned", 1234, 5678, follow_symlinks=False)
        os.chown("owners", 42, 43)
    else:
        skip("files owned by other users")

    # Extended attributes.
    os.mkdir("xattrs", 0o755)
    write("xattrs/small", b"small xattrs\n")
    os.setxattr("xattrs/small", "user.mime_type", b"text/plain")
    os.setxattr("xattrs/small", "user.empty", b"")
    write("xattrs/large", b"one large xattr\n")
    os.setxattr("xattrs/large", "user.large", bytes(range(256)) * 12)
    write("xattrs/many", b"more than fit in the inode\n")
    for i in range(20):
        os.setxattr("xattrs/many", f"user.attr{i:02d}", f"value {i}".encode() * 3)
    for i in range(3):
        p = f"xattrs/shared-{i}"
        write(p, b"same xattr block\n")
        os.setxattr(p, "user.shared", b"S" * 1500)
    os.setxattr("xattrs", "user.on-a-directory", b"yes")
    if ROOT:
        # VFS_CAP_REVISION_2: cap_net_bind_service (bit 10), permitted+effective.
        cap = struct.pack("<IIIII", 0x02000001, 1 << 10, 0, 0, 0)
        write("xattrs/capability", b"#!/bin/sh\n", 0o755)
        os.setxattr("xattrs/capability", "security.capability", cap)
        os.setxattr("xattrs/small", "trusted.slate", b"trusted value")
        acl = struct.pack("<I", 2)
        for tag, perm, ident in ((1, 6, 0xFFFFFFFF), (2, 4, 1000), (4, 4, 0xFFFFFFFF),
                                 (8, 5, 2000), (0x10, 7, 0xFFFFFFFF), (0x20, 0, 0xFFFFFFFF)):
            acl += struct.pack("<HHI", tag, perm, ident)
        write("xattrs/acl", b"acl\n", 0o640)
        try:
            os.setxattr("xattrs/acl", "system.posix_acl_access", acl)
            os.setxattr("xattrs", "system.posix_acl_default", acl)
        except OSError as e:
            print(f"gen-torture-tree: skipping POSIX ACLs ({e})", file=sys.stderr)
    else:
        skip("security.capability, trusted.* and POSIX ACLs")

    # Timestamps: nanoseconds everywhere, before 1970 and after 2038.
    os.mkdir("times", 0o755)
    special_times = {
        "times/epoch-minus-1ns": -1,
        "times/1901": -(2**31) * NS + 1,
        "times/1950": -631152000 * NS + 123456789,
        "times/2038-plus": (2**31 + 5) * NS + 999999999,
        "times/2100": 4102444800 * NS + 42,
        "times/2445": 15000000000 * NS + 7,
    }
    for p in special_times:
        write(p, p.encode() + b"\n")
    mtimes.update(special_times)
    mtimes["symlinks/fast"] = -86400 * NS * 365
    mtimes["times"] = (2**32 + 17) * NS + 5
    os.mkdir("times/dir-1969", 0o755)
    mtimes["times/dir-1969"] = -5 * NS + 5

    # Every other path gets a deterministic mtime with nanoseconds; directories
    # last and deepest first, since adding entries changes a directory's mtime.
    paths = []
    for dirpath, dirnames, filenames in os.walk(".", topdown=False):
        for n in filenames + dirnames:
            paths.append(os.path.join(dirpath, n)[2:])
    for i, p in enumerate(sorted(paths)):
        ns = mtimes.get(p, 1_600_000_000 * NS + i * 1_000_003_471)
        if not os.path.isdir(p) or os.path.islink(p):
            set_mtime(p, ns)
    dirs = [p for p in paths if os.path.isdir(p) and not os.path.islink(p)]
    for p in sorted(dirs, key=lambda p: -p.count("/")):
        set_mtime(p, mtimes.get(p, 1_500_000_000 * NS + len(p) * 777))
    set_mtime(".", 1_400_000_000 * NS + 1)

    regular = sum(1 for p in paths if os.path.isfile(p) and not os.path.islink(p))
    print(f"gen-torture-tree: {len(paths)} paths, {regular} regular files in {out}")
    assert regular >= 20_000


if __name__ == "__main__":
    main()
