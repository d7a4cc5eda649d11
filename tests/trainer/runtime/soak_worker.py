"""One process of a runtime soak: a live-paper session over stored candles served poll by poll, with the
faults a test asks for. Usage: python tests/trainer/runtime/soak_worker.py '<json>' with keys base, run_dir, first,
per_poll, until, failing (poll numbers that raise), kill_at / term_at (send SIGKILL / SIGTERM to this process
while the n-th signal row of this process is being written: inside that candle's transaction), resume.
Prints the session summary as JSON; exits as ``python -m trainer.runtime`` would."""

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the project root, for the tests package

from tests.conftest import make_cfg  # noqa: E402
from tests.trainer.runtime.world import Polls, candles_after_test_start, runtime_overrides  # noqa: E402


def main() -> int:
    spec = json.loads(sys.argv[1])
    base = Path(spec["base"])
    candles, _ = candles_after_test_start(base)
    polls = Polls(candles, spec["first"], spec["per_poll"], spec["until"], spec.get("failing", ()))
    from trainer.runtime.store import RuntimeStore

    faults = {spec.get("kill_at"): signal.SIGKILL, spec.get("term_at"): signal.SIGTERM}
    written = [0]
    original = RuntimeStore.signal

    def signal_row(self, row):  # the fault fires while this candle's transaction is open
        written[0] += 1
        if written[0] in faults:
            os.kill(os.getpid(), faults[written[0]])
        return original(self, row)

    RuntimeStore.signal = signal_row
    cfg = make_cfg(
        *runtime_overrides(
            base,
            "runtime.mode=live-paper",
            f"runtime.run_dir={spec['run_dir']}",
            "runtime.stop.flatten=false",
            "runtime.metrics_every=500",
            f"runtime.live.max_polls={polls.polls_needed()}",
            "runtime.live.poll_seconds=0",
            f"runtime.resume={spec['run_dir'] if spec.get('resume') else 'false'}",
        )
    )
    from trainer.runtime.session import run

    summary = run(cfg, source=polls, wait=lambda seconds: None)
    print(
        json.dumps(
            {k: summary[k] for k in ("status", "stop_kind", "steps", "candles_total", "equity", "signals_emitted")}
        )
    )
    return 3 if summary["status"] == "stopped" else 0


if __name__ == "__main__":
    sys.exit(main())
