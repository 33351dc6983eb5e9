#!/usr/bin/env python3
"""python-tuf's reference client (ngclient) against a repository slate wrote.

Usage: ngclient.py URL ROOT_JSON WORK_DIR TARGET...

Refreshes the metadata from URL/metadata/ with ROOT_JSON as the trusted root,
downloads each TARGET from URL/targets/ (hash-prefixed, as consistent
snapshots require) and prints one JSON object: the trusted versions and, per
target, its length, sha256, custom data and the sha256 of the bytes
downloaded.
"""
import hashlib
import json
import os
import sys

from tuf.ngclient import Updater


def main():
    url, root, work, *names = sys.argv[1:]
    meta_dir = os.path.join(work, "metadata")
    target_dir = os.path.join(work, "targets")
    os.makedirs(meta_dir, exist_ok=True)
    os.makedirs(target_dir, exist_ok=True)
    with open(root, "rb") as f:
        bootstrap = f.read()
    updater = Updater(
        meta_dir,
        url + "/metadata/",
        target_dir,
        url + "/targets/",
        bootstrap=bootstrap,
    )
    updater.refresh()
    out = {"targets": {}}
    for name in names:
        info = updater.get_targetinfo(name)
        if info is None:
            out["targets"][name] = None
            continue
        path = updater.download_target(info, os.path.join(target_dir, name.replace("/", "_")))
        with open(path, "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        out["targets"][name] = {
            "length": info.length,
            "sha256": info.hashes["sha256"],
            "custom": info.custom,
            "downloaded_sha256": got,
        }
    trusted = updater._trusted_set  # versions, for the comparison only
    out["versions"] = {
        "root": trusted.root.version,
        "timestamp": trusted.timestamp.version,
        "snapshot": trusted.snapshot.version,
        "targets": trusted.targets.version,
    }
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
