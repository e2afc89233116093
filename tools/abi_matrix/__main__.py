"""``python -m tools.abi_matrix [--valgrind] [--lib DIR]``: build and run the bad-input matrix, print a
summary and every broken rule; exit 1 if any."""

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from .generate import ROOT, build, problems, run


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--valgrind", action="store_true", help="run every case under valgrind memcheck")
    ap.add_argument("--lib", type=Path, default=ROOT / "bindings/python/acestep_runtime/_native",
                    help="directory of libacestep_runtime.so (default: the one scripts/build_core.sh fills)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        binary, cases = build(Path(tmp), args.lib)
        t0 = time.monotonic()
        outcomes = run(binary, cases, valgrind=args.valgrind, timeout_s=300 if args.valgrind else 30)
        elapsed = time.monotonic() - t0
    statuses = Counter(o.status for o in outcomes)
    functions = len({o.case.function for o in outcomes})
    print(f"{len(outcomes)} cases over {functions} functions in {elapsed:.1f} s"
          f"{' under valgrind' if args.valgrind else ''}; statuses: {dict(sorted(statuses.items()))}")
    bad = problems(outcomes)
    for line in bad:
        print("  " + line)
    print(f"{len(outcomes) - len(bad)} passed, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
