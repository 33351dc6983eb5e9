#!/usr/bin/env python3
"""A TUF repository for slate's targets written by python-tuf (the reference
implementation), with keys made by securesystemslib.

Usage: write_repo.py OUT_DIR TARGETS_JSON

TARGETS_JSON: a list of {"name", "file", "custom"}: each file becomes target
NAME (stored hash-prefixed under OUT_DIR/targets/) with the given custom data.
Writes OUT_DIR/metadata/{1.root,1.targets,1.snapshot}.json and
timestamp.json, consistent snapshots, ed25519 keys, threshold 1, expiring in
30 days; prints the root's path.
"""
import json
import os
import shutil
import sys
from datetime import datetime, timedelta, timezone

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer


def main():
    out, spec = sys.argv[1:]
    with open(spec) as f:
        targets_spec = json.load(f)
    expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)
    signers = {r: CryptoSigner.generate_ed25519() for r in ("root", "targets", "snapshot", "timestamp")}

    root = Metadata(Root(expires=expires, consistent_snapshot=True))
    for role, signer in signers.items():
        root.signed.add_key(signer.public_key, role)

    targets = Metadata(Targets(expires=expires))
    for t in targets_spec:
        tf = TargetFile.from_file(t["name"], t["file"], ["sha256"])
        tf.unrecognized_fields["custom"] = t["custom"]
        targets.signed.targets[t["name"]] = tf
        sha = tf.hashes["sha256"]
        dirname, base = os.path.split(t["name"])
        dest_dir = os.path.join(out, "targets", dirname)
        os.makedirs(dest_dir, exist_ok=True)
        shutil.copyfile(t["file"], os.path.join(dest_dir, f"{sha}.{base}"))

    snapshot = Metadata(Snapshot(expires=expires))
    snapshot.signed.meta["targets.json"] = MetaFile(version=targets.signed.version)
    timestamp = Metadata(Timestamp(expires=expires))
    timestamp.signed.snapshot_meta = MetaFile(version=snapshot.signed.version)

    meta = os.path.join(out, "metadata")
    os.makedirs(meta, exist_ok=True)
    ser = JSONSerializer(compact=False)
    for md, role, name in (
        (root, "root", "1.root.json"),
        (targets, "targets", "1.targets.json"),
        (snapshot, "snapshot", "1.snapshot.json"),
        (timestamp, "timestamp", "timestamp.json"),
    ):
        md.sign(signers[role])
        md.to_file(os.path.join(meta, name), serializer=ser)
    print(os.path.join(meta, "1.root.json"))


if __name__ == "__main__":
    main()
