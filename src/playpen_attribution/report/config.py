"""Config section `report`: the study's pre-declared primary comparison and, for a control experiment,
the answer it must give. Validated data only; whether the arms exist is checked by the experiment config."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from playpen_attribution.core.section import Section


class PrimaryComparison(Section):
    """The one comparison a study declares in advance: it is tested alone at alpha, before every other."""

    arm: str = Field(description="The arm under test (e.g. top_k).")
    versus: str = Field(description="The arm it is tested against: one of its `versus` arms (e.g. matched_random_k).")
    metric: Literal["choice_accuracy", "accuracy", "eval_loss"] = Field(
        description="choice_accuracy: the target ranked first among the eval's words by log-likelihood (what the arm "
        "knows); accuracy: word accuracy of greedy generation (also whether it learned the answer format); eval_loss.",
    )


class ReportConfig(Section):
    """What the report tests first, and for a control experiment the answer it must give."""

    primary: PrimaryComparison | None = Field(
        None, description="The pre-declared primary comparison; null = top_k against its first control on the first "
        "metric the run has of choice_accuracy, accuracy, eval_loss (the report says it was not declared).",
    )
    expect: Literal["arm_better", "versus_better", "no_difference"] | None = Field(
        None, description="A control's known answer for the primary comparison: the report then opens with control "
        "PASSED or FAILED, and `run` exits 1 when it failed; null = not a control.",
    )
