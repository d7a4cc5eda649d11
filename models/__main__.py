"""`python -m models [cpu|gpu] [--markdown | --names]`: the model families this checkout provides (from conf/model/)."""

import sys

from models.families import families, markdown, table

if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if "--markdown" in sys.argv:
        sys.stdout.write(markdown() + "\n")
    elif "--names" in sys.argv:  # comma-separated, for `train.py -m model=...`
        sys.stdout.write(",".join(f["name"] for f in families()) + "\n")
    else:
        stage = args[0] if args else None  # optional filter: cpu or gpu
        rows = [f for f in families() if stage is None or f["stage"] == stage]
        sys.stdout.write(table(rows) + "\n")
