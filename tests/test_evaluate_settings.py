"""EvaluationSettings: the `evaluate` block read into a frozen dataclass (user tier + advanced)."""

from __future__ import annotations

import pytest

from cryomtd.evaluate import EvaluationAdvanced, EvaluationSettings
from cryomtd.io import InputError
from cryomtd.settings import to_block


def test_defaults_and_the_nested_advanced_block():
    s = EvaluationSettings.from_config(None)
    assert s == EvaluationSettings() and s.thresholds == (0.5, 0.143) and s.advanced.grid_step == 15.0
    s = EvaluationSettings.from_config({"shift": False, "thresholds": [0.5], "advanced": {"grid_step": 30}})
    assert s.shift is False and s.reflections is True and s.thresholds == (0.5,)
    assert s.advanced == EvaluationAdvanced(grid_step=30) and s.advanced.ell_search == 6
    assert EvaluationSettings.from_config(to_block(s)) == s  # what result files record reads back


def test_metrics_module_re_exports_the_settings():
    from cryomtd.evaluate import metrics, settings

    assert metrics.EvaluationSettings is settings.EvaluationSettings


@pytest.mark.parametrize(
    "block,match",
    [
        ({"grid_step": 30}, r"experiments\.e\.evaluate: unknown key grid_step"),  # now under advanced
        ({"advanced": {"gird_step": 30}}, r"experiments\.e\.evaluate\.advanced: unknown key gird_step"),
        ({"advanced": {"output": "voxels"}}, "advanced.output"),
        ({"thresholds": [1.5]}, "thresholds"),
    ],
)
def test_bad_blocks_are_one_line_errors_naming_the_key(block, match):
    with pytest.raises(InputError, match=match) as e:
        EvaluationSettings.from_config(block, "experiments.e.evaluate")
    assert "\n" not in str(e.value)
