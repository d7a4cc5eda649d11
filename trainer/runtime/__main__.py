"""`python -m trainer.runtime mode=dry|paper|live-paper [overrides...]`: composes the same config tree as
train.py (`mode=...` is short for `runtime.mode=...`); errors a user can cause end with one line and exit 2."""
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("CANDLELAB_ROOT", str(ROOT))

EXIT_USER_ERROR, EXIT_CANCELLED = 2, 3


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip() + "\n\nKeys: conf/runtime/default.yaml (runtime.*), conf/runtime/guardrails/ "
              "(runtime/guardrails=default|ftmo); README 'Runtime'.")
        return 0
    args = [f"runtime.{a}" if a.startswith(("mode=", "slots=", "weights=")) else a for a in args]
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(levelname)s] %(message)s", datefmt="%H:%M:%S")
    from hydra.errors import HydraException

    from data.errors import UserError
    try:
        from trainer.plan import compose_config
        from trainer.runtime.session import run
        cfg = compose_config(args)
        summary = run(cfg)
    except UserError as exc:
        sys.stderr.write(exc.line() + "\n")
        return EXIT_USER_ERROR
    except HydraException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.stderr.write(f"error: {first} (command line)\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("cancelled: interrupted (runtime)\n")
        return EXIT_CANCELLED
    print(f"{summary['mode']}: {summary['steps']} candles, {summary['signals_emitted']} signals"
          + (f", equity {summary['equity']:,.2f}" if summary["equity"] is not None else "")
          + (f", stopped by {summary['stopped_by']}" if summary["stopped_by"] else "")
          + f" -> {summary['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
