"""Make SNASNet's own code importable on a CPU with spikingjelly 2.x, for tests/test_reference_code.py.

    git clone https://github.com/Intelligent-Computing-Lab-Yale/Neural-Architecture-Search-for-Spiking-Neural-Networks snasnet
    python benchmarks/prepare_snasnet.py snasnet /tmp/snasnet_final
    KSS_SNASNET_DIR=/tmp/snasnet_final python -m pytest tests/test_reference_code.py

Reads model_snn.py and searchcells/ at the final commit (498040912c, 2022-07-19) from the clone's
history, whatever is checked out, and writes them to OUT with exactly three edits:
`spikingjelly.clock_driven` -> `spikingjelly.activation_based`, `.cuda()` removed, the matplotlib
import removed. Nothing of it is copied into kss: the repository has no licence file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

FINAL = "498040912ccf9634a137bdade47689d335dce2c8"
FILES = ("model_snn.py", "searchcells/search_cell_snn.py")


def patched(source: str) -> str:
    source = source.replace("spikingjelly.clock_driven", "spikingjelly.activation_based")
    source = source.replace(".cuda()", "")
    return "".join(line for line in source.splitlines(keepends=True) if line.strip() != "import matplotlib.pyplot as plt")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clone", type=Path, help="a git clone of SNASNet's repository")
    parser.add_argument("out", type=Path, help="folder to write the patched files to (KSS_SNASNET_DIR)")
    parser.add_argument("--commit", default=FINAL, help="the commit to read (default: the final one)")
    args = parser.parse_args()
    for name in FILES:
        shown = subprocess.run(["git", "-C", str(args.clone), "show", f"{args.commit}:{name}"], capture_output=True, text=True)
        if shown.returncode:
            print(f"error: cannot read {name} at {args.commit[:10]} in {args.clone}: {shown.stderr.strip()}", file=sys.stderr)
            return 2
        target = args.out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(patched(shown.stdout))
    (args.out / "searchcells" / "__init__.py").touch()
    (args.out / "COMMIT").write_text(args.commit + "\n")
    print(f"SNASNet {args.commit[:10]} ready in {args.out}: export KSS_SNASNET_DIR={args.out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
