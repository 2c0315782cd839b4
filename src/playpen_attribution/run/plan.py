"""`playpen-attribution plan`: what a run would do with each stage folder, without running anything.

While `planning()` is active, `stage_folder.run_stage` hands every stage to the plan instead of building
it, with the same resolved config and inputs the stage would build from (each stage's `run` computes
them before it builds), so the pipeline's own order of stages is walked and nothing is written. A
folder is `reuse` when its config and inputs are unchanged and its files are as built, `build` when it
does not exist yet, and `stale` when it exists but a run would refuse it (or rebuild it with
`--overwrite`): its config changed, its files changed, or an upstream folder is (re)built first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playpen_attribution.run import artifacts
from playpen_attribution.run.stage_folder import PLANNING, changed_config, judge


@dataclass(frozen=True)
class Decision:
    """What a run would do with one stage folder, and why."""

    folder: Path
    action: str  # build, reuse or stale
    why: str


class Plan:
    """The decisions so far, stage folder -> Decision, in the order the pipeline reached them."""

    def __init__(self) -> None:
        self.decisions: dict[Path, Decision] = {}

    def _upstream(self, folder: Path) -> Decision | None:
        """The decision on an input folder; a seed folder's `data/`, `train_base/`, ... stand for the run's
        shared folders they link to (or will)."""
        if folder in self.decisions:
            return self.decisions[folder]
        if folder.parent.name.startswith("seed_") and (folder.is_symlink() or not folder.exists()):
            return self.decisions.get(folder.parent.parent / folder.name)
        return None

    def decide(self, final: Path, config: dict, inputs: dict[str, Path], reuse: bool = True) -> Path:
        """Judge one stage folder (`run_stage`'s stand-in while planning); returns the folder, as a build would."""
        rebuilt = sorted(name for name, folder in inputs.items()
                         if (up := self._upstream(Path(folder))) is not None and up.action != "reuse")
        if not reuse:
            action, why = "build", "rebuilt on every run"
        elif rebuilt and artifacts.is_stage_folder(final):
            fields = changed_config(final, config)
            action, why = "stale", f"upstream rebuilt first: {', '.join(rebuilt)}" + (
                f"; config changed: {', '.join(fields)}" if fields else "")
        else:
            action, why = judge(final, config, inputs)
        self.decisions[final] = Decision(final, action, why)
        return final


@contextmanager
def planning() -> Iterator[Plan]:
    """Stages called inside the block are judged, not built (`Plan.decide`)."""
    plan = Plan()
    token = PLANNING.set(plan)
    try:
        yield plan
    finally:
        PLANNING.reset(token)
