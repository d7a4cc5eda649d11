"""The plan ranks servable targets on net expectancy after costs and marks what the runtime cannot serve."""

import pytest


def test_plan_ranks_servable_targets_on_net_expectancy_and_marks_the_rest(tmp_path):
    from tests.conftest import make_cfg
    from trainer import plan as planner

    free = [
        "eval.trading.fee_bps=0",
        "eval.trading.slippage_bps=0",
        "eval.trading.spread_bps=0",
        "eval.trading.spread_from_features=false",
    ]
    args = [
        "data.rows=8000",
        "trainer.num_threads=1",
        "plan.probe.n_estimators=40",
        "plan.auto_targets.folds=3",
        "plan.routing.mode=pooled",
        "plan.families=[lightgbm]",
        "plan.auto_targets.min_score=-1.0",
        "plan.targets=[{type:forward_return,horizon:15},{type:direction,horizon:15}]",
        *free,
    ]
    plan = planner.build_plan(make_cfg(*args), args)
    rows = {t["name"]: t for t in plan["rankings"]["targets"]}
    regression, direction = rows["forward_return_h15"], rows["direction_h15"]
    # the regression target is scored, but nothing can serve it: marked, never kept (min_score lets any skill in)
    assert not regression["servable"] and not regression["kept"] and regression["expectancy_bps"] is None
    assert [t["name"] for t in plan["rankings"]["targets"]] == ["direction_h15", "forward_return_h15"]
    assert {j["target_name"] for j in plan["jobs"]} == {"direction_h15"}
    # the classifier is traded per fold with the policy its validation rows chose, after costs (none here)
    trades = direction["probe_trades"]
    assert direction["servable"] and direction["kept"] and trades["n_trades"] > 0
    assert len(trades["folds"]) == 3 and all(f["policy"]["chosen_on"] == "validation" for f in trades["folds"])
    assert sum(f["trades"] for f in trades["folds"]) == trades["n_trades"]
    assert direction["expectancy_bps"] == pytest.approx(trades["total_net_return"] / trades["n_trades"] * 1e4)
    text = planner.summary(plan, tmp_path / "plan.json")
    assert "forward_return_h15" in text and "not servable" in text and "bps over" in text
    # without probe trades servable targets still come first, ranked on skill
    quick = planner.build_plan(make_cfg(*args, "plan.probe.trading=false"), [*args, "plan.probe.trading=false"])
    first, last = quick["rankings"]["targets"]
    assert (first["name"], first["expectancy_bps"], first["kept"]) == ("direction_h15", None, True)
    assert not last["servable"] and "not traded" in planner.summary(quick, tmp_path / "quick.json")
    # a bar on the expectancy keeps nothing when no target clears it
    with pytest.raises(Exception, match="no candidate target"):
        planner.build_plan(
            make_cfg(*args, "plan.auto_targets.min_expectancy_bps=10000"),
            [*args, "plan.auto_targets.min_expectancy_bps=10000"],
        )
