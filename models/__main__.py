"""`python -m models`: the model families this checkout provides (from conf/model/)."""
import sys

from models.registry import families, table

if __name__ == "__main__":
    stage = sys.argv[1] if len(sys.argv) > 1 else None   # optional filter: cpu or gpu
    rows = [f for f in families() if stage is None or f["stage"] == stage]
    sys.stdout.write(table(rows) + "\n")
