"""The synth config: validated data, built from a YAML file and/or command-line flags; no I/O."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from playpen_attribution.core.yaml_config import validate

GAME_DEFINING_FIELDS = (
    "describer_model", "max_turns", "max_repairs", "seed", "experiment", "targets_file",
    "exclude_words_file",
)
"""Fields a resumed run must share with the run that started the folder (the others may change:
more guesser models or games extend a run; concurrency, timeout and retries only change how)."""


class SynthConfig(BaseModel):
    """Everything `playpen-attribution synth` needs (the API key comes from the environment)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    output_dir: Path
    """Folder for games.jsonl, rows_wordguesser.jsonl, summary.json; rerunning into it resumes."""
    describer_model: str = Field(min_length=1)
    """The model that gives the clues, e.g. 'openai/gpt-4o-mini'."""
    guesser_models: list[str] = Field(min_length=1)
    """The models that guess; each plays `games_per_guesser` games."""
    games_per_guesser: int = Field(ge=1)
    """Games per guesser model (the main cost control: total games = this x guesser models)."""
    max_turns: int = Field(default=3, ge=1)
    """Clue/guess rounds before a game counts as a failure."""
    max_repairs: int = Field(default=2, ge=0)
    """Re-asks after a rule-breaking reply before the game is aborted."""
    seed: int = 0
    """Shuffles the target order; every guesser model gets the same targets in the same order."""
    targets_file: Path | None = None
    """Word source: clembench instances JSON or a JSON list; None uses the shipped default list."""
    exclude_words_file: Path | None = None
    """Eval-set words to leave out: one word per line, or JSONL rows with `target_word`."""
    experiment: str = Field(default="synthetic", min_length=1)
    """The `experiment` value of the rows (and part of their group and example ids)."""
    concurrency: int = Field(default=4, ge=1)
    """Games played at the same time (threads)."""
    timeout: float = Field(default=60.0, gt=0)
    """Seconds one API request may take before it is retried."""
    max_retries: int = Field(default=5, ge=0)
    """Retries per API request on 429, 5xx, timeouts and connection errors."""
    backoff_base: float = Field(default=1.0, ge=0)
    """Seconds before the first retry; doubles each retry, with jitter."""
    save_hf_dataset: bool = False
    """Also write the rows as a Hugging Face dataset in `hf_dataset/`."""

    @field_validator("guesser_models")
    @classmethod
    def _distinct(cls, models: list[str]) -> list[str]:
        if any(not m.strip() for m in models) or len(set(models)) != len(models):
            raise ValueError("expected distinct, non-empty model names")
        return models


def build_config(values: dict, source: str) -> SynthConfig:
    """A SynthConfig from merged values; a bad value is a UserError naming field, value, expectation."""
    return validate(SynthConfig, values, f"{source}: invalid synth config")


def config_mismatches(saved: dict, cfg: SynthConfig) -> list[str]:
    """Game-defining fields where `cfg` differs from the config saved in the output folder."""
    current = cfg.model_dump(mode="json")
    return [
        f"{name}: folder has {saved.get(name)!r}, this run has {current[name]!r}"
        for name in GAME_DEFINING_FIELDS
        if saved.get(name) != current[name]
    ]
