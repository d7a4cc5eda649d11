"""A runtime session whose stored state it cannot continue is refused with one line."""

import pytest

from core.errors import UserError
from tests.conftest import make_cfg


@pytest.mark.parametrize("state", [{"version": 1, "last_candle": [1, 2]}, {"version": 1}, ["not", "a", "state"]])
def test_a_session_with_a_foreign_stored_state_is_refused_with_one_line(tmp_path, state):
    """A session folder's runtime.db is read as JSON only; a state it cannot continue is a user error."""
    from tests.trainer.runtime.world import promoted_world, runtime_overrides
    from trainer.runtime.session import run
    from trainer.runtime.store import RuntimeStore

    base = promoted_world(tmp_path.parent.parent / "untrusted-runtime-world")  # trained once per test session
    keep = ["runtime.mode=paper", "runtime.replay.max_candles=5"]
    run(make_cfg(*runtime_overrides(base, *keep, f"runtime.run_dir={tmp_path / 'session'}")))
    store = RuntimeStore(tmp_path / "session")  # the finished session, edited to look killed mid-way
    store.put_state("session", {**store.get_state("session"), "status": "running"})
    store.put_state("checkpoint", state)
    store.close()
    with pytest.raises(UserError, match="stored checkpoint cannot be continued") as err:
        run(make_cfg(*runtime_overrides(base, *keep, f"runtime.resume={tmp_path / 'session'}")))
    assert err.value.where == "runtime.resume"
