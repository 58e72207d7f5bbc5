#!/usr/bin/env python3
"""Writes a text's bytes as a flat binary dataset of uint16 token ids (a
vocabulary of 256), the layout of Megatron's and nanoGPT's preprocessed .bin
files that `shardline-run --data` reads.

    scripts/make-byte-dataset.py /usr/share/common-licenses/GPL-3 gpl3.bin
"""

import array
import sys


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: make-byte-dataset.py IN OUT.bin\n")
        return 2
    source, target = sys.argv[1], sys.argv[2]
    try:
        with open(source, "rb") as f:
            data = f.read()
    except OSError as e:
        sys.stderr.write(f"make-byte-dataset.py: error: cannot read {source}: {e.strerror}\n")
        return 1
    if not data:
        sys.stderr.write(f"make-byte-dataset.py: error: {source} is empty\n")
        return 1
    ids = array.array("H", list(data))
    if sys.byteorder != "little":
        ids.byteswap()
    try:
        with open(target, "wb") as f:
            ids.tofile(f)
    except OSError as e:
        sys.stderr.write(f"make-byte-dataset.py: error: cannot write {target}: {e.strerror}\n")
        return 1
    print(f"{target}: {len(ids)} token ids (uint16, vocabulary 256) from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
