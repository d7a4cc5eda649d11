"""`python -m trainer.runtime mode=dry|paper|live-paper|live [overrides...]`: composes the same config tree as
train.py (`mode=...` is short for `runtime.mode=...`, `resume=...` for `runtime.resume=...`).

Stops: SIGINT, SIGTERM, the kill switch and a fatal provider error store a stop event, flatten every position
(next open, else last close), write report.md, metrics.json and session.json; a second signal stops at once
(the database keeps every committed candle). `runtime.resume=true` (or a session folder) continues one.

Exit codes:
  0  the session ran to its end (data, runtime.replay.max_candles, runtime.live.max_polls)
  2  an error a user can cause (one line: error: <what> (<where>))
  3  stopped on request: SIGINT, SIGTERM or the kill switch (or interrupted before the session began)
  4  stopped by a fatal provider error (runtime.live.max_provider_errors polls failed in a row)
  5  stopped at once by a second signal: no report; resume continues from the last committed candle"""

import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("CANDLELAB_ROOT", str(ROOT))

EXIT_USER_ERROR, EXIT_STOPPED, EXIT_PROVIDER_ERROR, EXIT_STOPPED_AT_ONCE = 2, 3, 4, 5


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(
            __doc__.strip() + "\n\nKeys: conf/runtime/default.yaml (runtime.*), conf/runtime/guardrails/ "
            "(runtime/guardrails=default|ftmo); docs/runtime.md."
        )
        return 0
    args = [f"runtime.{a}" if a.startswith(("mode=", "slots=", "weights=", "resume=")) else a for a in args]
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(levelname)s] %(message)s", datefmt="%H:%M:%S")
    from hydra.errors import HydraException

    from core.errors import UserError
    from trainer.runtime.stops import StoppedAtOnce

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
        sys.stderr.write("cancelled: interrupted before the session began (runtime)\n")
        return EXIT_STOPPED
    except StoppedAtOnce as exc:
        sys.stderr.write(
            f"stopped at once: second {exc.name}; the database holds every committed candle, "
            f"runtime.resume=true continues it (runtime)\n"
        )
        return EXIT_STOPPED_AT_ONCE
    print(
        f"{summary['mode']}: {summary['steps']} candles, {summary['signals_emitted']} signals"
        + (f", equity {summary['equity']:,.2f}" if summary["equity"] is not None else "")
        + (f", stopped by {summary['stopped_by']}" if summary["stopped_by"] else "")
        + f" -> {summary['run_dir']}"
    )
    if summary.get("status") == "stopped":
        return EXIT_PROVIDER_ERROR if summary.get("stop_kind") == "provider_error" else EXIT_STOPPED
    return 0


if __name__ == "__main__":
    sys.exit(main())
