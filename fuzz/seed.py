#!/usr/bin/env python3
"""Seeds fuzz/corpus/<fuzzer>/ from the tests: model specs for spec-fuzzer (examples/models/*.json
and the JSON pieces of test/Model/*.test), IR for ir-fuzzer (every `// -----` piece of
test/**/*.mlir). Each seed is named after its content, so reseeding is idempotent."""
import hashlib
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent


def write(corpus, text, limit):
    data = text.encode()
    if not data.strip() or len(data) > limit:
        return
    out = root / "fuzz" / "corpus" / corpus
    out.mkdir(parents=True, exist_ok=True)
    (out / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def split_file_parts(text):
    """The `#--- name` parts of a split-file test."""
    parts = re.split(r"^#--- (\S+)\n", text, flags=re.M)
    return [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def main():
    for spec in sorted((root / "examples" / "models").glob("*.json")):
        write("spec-fuzzer", spec.read_text(), 16384)
    for test in sorted((root / "test" / "Model").glob("*.test")):
        for name, body in split_file_parts(test.read_text()):
            if name.endswith(".json"):
                write("spec-fuzzer", body, 16384)
    for test in sorted((root / "test").rglob("*.mlir")):
        for piece in re.split(r"^// -----\s*$", test.read_text(), flags=re.M):
            # Lit and FileCheck lines are comments to the parser; dropping them keeps seeds small.
            lines = [l for l in piece.splitlines() if not l.lstrip().startswith("//")]
            write("ir-fuzzer", "\n".join(lines) + "\n", 16384)


if __name__ == "__main__":
    sys.exit(main())
