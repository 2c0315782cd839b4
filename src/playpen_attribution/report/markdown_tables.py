"""report.md's sections after the answer: data efficiency, the setup, the per-seed tables, the benchmarks,
the attribution check, the SAE predictor, the arms' contents and the cost.

Each function takes the records (or the section a stage wrote, for the attribution summary, the predictor's
metrics and the benchmarks) and returns its lines; `report.markdown` puts them in the page's order.
"""

from __future__ import annotations

from playpen_attribution.report.cells import (
    METRIC_TEXT,
    accuracy,
    counts,
    describe_arm,
    difference,
    no_guess,
    number,
    other_accuracy,
    p,
    settings,
    value,
)
from playpen_attribution.report.comparisons import METRICS
from playpen_attribution.report.records import ArmEntry, DataEfficiency, Report, SelectedArm

DIVERSITY_RATIO = 0.8
"""An arm covering fewer than this share of its control's distinct target words is pointed out."""


def efficiency_lines(eff: DataEfficiency | None) -> list[str]:
    """How many random rows top_k's k rows are worth: random arms at 1x, 2x, 4x k beside top_k."""
    if eff is None:
        return []
    is_accuracy = eff.metric != "eval_loss"
    what = METRICS[eff.metric].label
    top = eff.top_k
    lines = ["## Data efficiency", "",
             f"| arm | rows | tokens (first seed) | {what} (mean over seeds) | Δ vs top_k [95% CI] | p_holm | verdict |",
             "|---|---|---|---|---|---|---|",
             f"| top_k | {top.rows} | {top.tokens} | {number(top.mean)} | | | |"]
    for r in eff.random:
        lines.append(f"| {r.arm.arm} ({r.multiple}x k) | {r.arm.rows} | {r.arm.tokens} | {number(r.arm.mean)} | "
                     f"{difference(r.difference) if r.tested else 'not tested'} | "
                     f"{p(r.p_holm) if r.p_holm is not None else ''} | {r.verdict if r.tested else ''} |")
    tested = [r for r in eff.random if r.tested]
    worth, beats = eff.worth_at_least, eff.beats_up_to
    if worth is None and tested[0].verdict in ("one seed", "no replication"):
        sentence = "One seed: how many random rows top_k is worth needs at least two (sweep.seeds)."
    elif worth is None:
        first = tested[0]
        sentence = (f"top_k at k = {top.rows} rows is worth less than {first.multiple}x k random rows: "
                    f"{first.arm.arm} is reliably better.")
    else:
        sentence = (f"top_k at k = {top.rows} rows matches random rows at {worth}x k: no random arm up to "
                    f"{worth}x k is reliably better on {what}")
        sentence += (f", and top_k is reliably better than random at {beats}x k." if beats else ".")
        beyond = [r for r in tested if r.multiple > worth and r.verdict == "random better"]
        if beyond:
            sentence += f" At {beyond[0].multiple}x k random rows are reliably better."
    return lines + ["", sentence + " Δ = random − top_k" + (" (a negative Δ eval loss favours random)."
                                                            if not is_accuracy else "."), ""]


def attribution_settings(attribute: dict) -> dict:
    """The attribute section as the Setup line shows it: no cache folder, no empty `methods`, and a method's option
    section (`trackstar: {...}`) only when that method ran."""
    ran = set(attribute.get("methods") or [attribute.get("method")])
    return {k: v for k, v in attribute.items()
            if k != "cache_dir" and not (k == "methods" and not v) and not (isinstance(v, dict) and k not in ran)}



def setup_lines(report: Report) -> list[str]:
    setup = report.setup
    lines = ["## Setup", ""]
    train, arm_train = setup.base_training, setup.arm_training
    start = ("continues the base adapter" if arm_train.init == "base_adapter"
             else f"trains a fresh LoRA r={arm_train.lora_r} on the base model")
    lines.append(f"- Model: `{setup.model}`; base adapter: LoRA r={train.lora_r}, "
                 f"lr {train.learning_rate}, {train.epochs} epochs on the whole pool (it is what "
                 f"attribution scores under); each arm {start} with lr {arm_train.learning_rate}, "
                 f"{arm_train.epochs} epochs.")
    if report.data is not None:
        rows = report.data.rows
        lines.append(f"- Data: {rows.get('train_base')} pool rows, {rows.get('attr_query')} attribution queries, "
                     f"{rows.get('eval')} eval rows; dropped: {counts(report.data.dropped)}.")
        if rows.get("candidates") is not None:
            lines.append(f"- Candidates: {rows['candidates']} new rows never scored by gradients; the predictor "
                         "arms (and their matched controls) are drawn from them, ranked by the predictor fitted on "
                         "the scored pool.")
    lines.append(f"- Arms: k = {', '.join(str(k) for k in setup.ks)}; a matched random control is drawn from the whole pool "
                 "(what a user would otherwise have picked, so it may share rows with the arm it is matched to); "
                 "matched_random_rest arms draw from the rows outside it (the seed's control).")
    lines.append(f"- Seeds: {', '.join(map(str, setup.seeds)) or 'none'}; each seed redraws the random arms and trains every "
                 f"arm with that seed; the base adapter is "
                 f"{'retrained per seed (attribution and selection too)' if setup.retrain_base else 'shared by all seeds'}.")
    if setup.attribute:
        lines.append("- Attribution: " + settings(attribution_settings(setup.attribute)) + ".")
    if report.untracked_modules:
        lines.append(f"- **Attribution did not see {value(report.untracked_modules)}**: the base adapter trains them in "
                     "full (modules_to_save) and Bergson tracks only LoRA modules; allowed by "
                     "attribute.allow_untracked_modules, so the scores cover part of what training changed.")
    metric = report.accuracy_metric
    if metric:
        eval_outcomes = (report.data.outcomes or {}).get("eval") or {} if report.data is not None else {}
        mix = ", ".join(f"{n} {outcome}" for outcome, n in sorted(eval_outcomes.items()))
        lines.append(f"- Metrics: {METRIC_TEXT[metric][0]} (greedy generation, the word after `GUESS:`: it also reads "
                     "whether an arm learned the answer format); choice accuracy (the target word ranked first among "
                     "the eval's target words by the likelihood of the completion with each as the guess: what an arm "
                     "knows, however it writes); eval loss" + (f"; eval games: {mix}." if mix else "."))
    mt = report.multiple_testing
    lines += [("- Statistics: across seeds, the mean of the paired per-row differences (arm − vs, same eval rows) "
               "with a 95% t interval and t-test whose variance is seed to seed (a seed redraws the random arms and "
               "retrains) plus the eval rows' own (crossed, Satterthwaite degrees of freedom), so a verdict holds for "
               f"new seeds and new eval rows. The primary comparison is tested alone at {mt.alpha}; the "
               f"{mt.secondary_tests} other across-seed tests are Holm-adjusted together (`p_holm`) and "
               "claimed only when the primary holds (a fixed sequence). A test that finds nothing gives the "
               "smallest difference the design detects at 80% power. Per seed: exact McNemar on binary metrics, a "
               "paired bootstrap interval on eval loss (descriptive, adjusted apart)."), ""]
    return lines


def _training(arm: ArmEntry) -> str:
    t = arm.training
    if t is None or t.final_loss is None:
        return " | "
    acc = "" if t.token_accuracy is None else f", token acc {t.token_accuracy:.2f}"
    done = {True: "yes", False: "**no**", None: "n/a"}[t.converged]
    return f"{t.final_loss:.3f}{acc} | {done}"


def seed_tables(report: Report) -> list[str]:
    main, other = METRIC_TEXT[report.accuracy_metric or "correct"]
    lines = []
    for seed in [None] + sorted({a.seed for a in report.arms if a.seed is not None}):
        arms = [a for a in report.arms if a.seed == seed]
        if not arms:
            continue
        lines += ["## Shared models" if seed is None else f"## Seed {seed}", "",
                  f"| model | {main} [95% CI] | {other} | no guess | choice accuracy (MRR) | eval loss | final train loss | converged |",
                  "|---|---|---|---|---|---|---|---|"]
        for arm in arms:
            choice = f"{arm.choice_accuracy:.4f} ({arm.choice_mrr:.3f})" if arm.choice_accuracy is not None else "n/a"
            lines.append(f"| {arm.name} | {accuracy(arm)} | {other_accuracy(arm)} | {no_guess(arm)} | {choice} | "
                         f"{number(arm.eval_loss)} | {_training(arm)} |")
        tests = [c for c in report.comparisons if c.seed == seed and c.metrics]
        if tests:
            lines += ["", "| arm | vs | metric | Δ | test | p | p_holm (per-seed tests) |", "|---|---|---|---|---|---|---|"]
            for c in tests:
                for name, t in c.metrics.items():
                    shown = difference(t["interval"]) if "interval" in t else f"{t['difference']:+.4f}"
                    if "mcnemar" in t:
                        shown += f" ({t['mcnemar']['a_only']} / {t['mcnemar']['b_only']} rows)"
                    lines.append(f"| {c.arm} | {c.versus} | {METRICS[name].label} | {shown} | {t['test']} | "
                                 f"{p(t['p_value'])} | {p(t.get('p_holm'))} |")
        lines.append("")
    return lines


def selection_lines(selection: dict[int, dict[str, SelectedArm]] | None) -> list[str]:
    """The first seed's arms: what each is, its rows, tokens, outcomes and contents; an arm much less diverse
    than its control pointed out."""
    if selection is None:
        return []
    seed, arms = next(iter(selection.items()))
    planted = any(a.contents is not None and a.contents.planted is not None for a in arms.values())
    lines = [f"## Arms (seed {seed}; random arms are redrawn per seed)", "",
             "| arm | what | rows | tokens (completion) | outcomes | groups | target words | eval targets covered |"
             + (" planted rows | clean rows |" if planted else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|---|" if planted else "")]
    for name, arm in arms.items():
        spec, held = arm.selection, arm.contents
        coverage = held.eval_target_coverage if held is not None else None
        budget = f"{spec.tokens} ({spec.completion_tokens})" if spec.completion_tokens is not None else spec.tokens
        what = describe_arm(spec) + (" (from the candidates)" if spec.split == "candidates" else "")
        cells = [name, what, spec.rows, budget, counts(spec.outcomes), held.groups if held else "n/a",
                 held.target_words if held else "n/a", "n/a" if coverage is None else f"{coverage:.2f}"]
        if planted:
            cells += [counts(held.planted if held else None),
                      f"{held.clean_fraction:.3f}" if held and held.clean_fraction is not None else "n/a"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines + [""] + _diversity_notes(arms)


def _diversity_notes(arms: dict[str, SelectedArm]) -> list[str]:
    """An arm covering fewer than `DIVERSITY_RATIO` of its main control's distinct target words."""
    notes = []
    for name, arm in arms.items():
        main = arm.selection.versus[0] if arm.selection.versus else None
        control = arms.get(main) if main else None
        held, theirs = arm.contents, control.contents if control else None
        if (held and theirs and held.target_words and theirs.target_words
                and held.target_words < DIVERSITY_RATIO * theirs.target_words):
            notes.append(f"- **{name} is much less diverse than {main}**: {held.target_words} distinct "
                         f"target words against {theirs.target_words} (eval targets covered "
                         f"{held.eval_target_coverage or 0:.2f} vs {theirs.eval_target_coverage or 0:.2f}); "
                         "a loss may come from what it lacks rather than from what it holds.")
    return notes + [""] if notes else []


def cost_lines(report: Report) -> list[str]:
    sweep = report.sweep
    lines = ["## Cost", "", f"Wall time: {report.wall_seconds:.1f} s in all stages"
             + (f"; {sweep.trainings} arm trainings, {sweep.mean_training_seconds:.1f} s each on average."
                if sweep.trainings else "."), "", "| stage | seconds | throughput | peak memory |", "|---|---|---|---|"]
    speed, peak = report.real_model, report.stage_peak_rss_mb
    per_seed: dict[str, float] = {}
    for name, seconds in report.stage_seconds.items():
        if name.startswith("seed_"):
            per_seed[name.split("/")[0]] = per_seed.get(name.split("/")[0], 0.0) + seconds
        else:
            memory = f"{peak[name] / 1024:.1f} GB" if name in peak else ""
            lines.append(f"| {name} | {seconds:.1f} | {speed.get(name, '')} | {memory} |")
    lines += [f"| {name}/ (all its stages) | {seconds:.1f} | | {_largest(peak, name)} |" for name, seconds in per_seed.items()]
    return lines + [""]


def _largest(peak: dict, seed_dir: str) -> str:
    """The largest peak resident memory of a seed folder's stages."""
    values = [v for k, v in peak.items() if k.split("/")[0] == seed_dir]
    return f"{max(values) / 1024:.1f} GB (largest)" if values else ""


def attribution_lines(a: dict | None) -> list[str]:
    """The attribute stage's summary: how many top-k rows are success rows (and clean, with planted rows)."""
    if a is None:
        return []
    lines = ["## Attribution check", "",
             (f"{a['precision_success_at_k']:.4f} of the top-{a['k']} rows are success rows, against "
              f"{a['pool_success_fraction']:.4f} of the pool ({a.get('non_finite', 0)} non-finite scores).")]
    if a.get("planted"):
        pl = a["planted"]
        auroc = pl.get("auroc_clean_vs_planted")
        lines.append(f"Planted rows (the source's known truth): {pl['clean_fraction_at_k']:.4f} of the top-{pl['k']} "
                     f"are clean, against {pl['pool_clean_fraction']:.4f} of the pool; planted rows in the top-"
                     f"{pl['k']} / in the pool: " + ", ".join(f"{kind} {pl['planted_at_k'][kind]} / "
                                                         f"{pl['planted_in_pool'][kind]}" for kind in pl["planted_at_k"])
                     + ("" if auroc is None else f"; AUROC clean vs planted {auroc:.3f}") + ".")
    return lines + [""]


def predictor_lines(predictor: dict | None) -> list[str]:
    """Every predictor variant next to the baselines, on the same held-out rows (predict/metrics.json)."""
    predictor = predictor or {}
    models = predictor.get("models")
    if not models:
        return []

    def num(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    def regularisation(m: dict) -> str:
        return f"C = {m['C']:g}" if "C" in m else (f"alpha = {m['alpha']:g}" if "alpha" in m else "n/a")

    fed = predictor.get("predicted_by", "sae")
    lines = ["## SAE predictor of attribution (cross-fitted: each row predicted by a model that never saw it)", "",
             "| predictor | Spearman | Pearson | R² | top-k overlap | AUROC top-vs-rest | AUROC top decile | chosen |",
             "|---|---|---|---|---|---|---|---|"]
    for name, m in models.items():
        label = name + (" (ranks sae_top_k)" if name == fed else "") + (
            f" ({predictor.get('probe_pooling', 'mean')} pooling; ranks probe_top_k)" if name == "residual" else "") + (
            f" (block {name[9:]}; ranks probe_top_k@{name[9:]})" if name.startswith("residual@") else "")
        lines.append(f"| {label} | {num(m.get('spearman'))} | {num(m.get('pearson'))} | {num(m.get('r2'))} | "
                     f"{num(m.get('top_k_overlap'))} | {num(m.get('auroc'))} | {num(m.get('auroc_top_decile'))} | "
                     f"{regularisation(m)} |")
    lines += ["", (f"Top-k: the top {next(iter(models.values()))['top_k']} rows of {predictor.get('scored_rows')}; "
                   "every model on the same grouped folds. sae: stats + feature means; sae_topk: stats + each row's "
                   "top-K features; sae_logistic: a classifier of the top decile (its score is P(top decile)); "
                   "sae@L: the sae design on block L; length, residual: the baselines; residual@L: the residual "
                   "probe on block L (sae.probe_layers).")]
    for name, why in (predictor.get("null_metrics") or {}).items():
        lines.append(f"{name}: {why}.")
    for name, why in (predictor.get("skipped_models") or {}).items():
        lines.append(f"{name} not fitted: {why}.")
    if predictor.get("candidates_ranked") is not None:
        lines.append(f"{predictor['candidates_ranked']} candidate rows (never scored by gradients) ranked by {fed} and "
                     "the probe fitted on every scored row (predict/candidate_scores.jsonl).")
    return lines + [""]


def benchmark_lines(b: dict | None) -> list[str]:
    """lm-eval's results per model, and the arms paired with their controls on the same items."""
    if not b:
        return []
    lines = ["## Benchmarks (lm-eval)", "", "| model | seed | task | metric | value ± stderr | items |", "|---|---|---|---|---|---|"]
    for r in b["results"]:
        shown = "n/a" if r["value"] is None else f"{r['value']:.4f}" + (
            f" ± {r['stderr']:.4f}" if r["stderr"] is not None else "")
        seed = "shared" if r["seed"] is None else r["seed"]
        lines.append(f"| {r['name']} | {seed} | {r['task']} | {r['metric']} ({r['filter']}) | {shown} | {r['n']} |")
    if b["aggregate"]:
        lines += ["", "| arm | vs | task | metric | seeds | items | Δ [95% CI] | seeds arm / vs | p | p_holm |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for a in b["aggregate"]:
            lines.append(f"| {a['arm']} | {a['versus']} | {a['task']} | {a['metric']} | {len(a['seeds'])} | {a['items']} | "
                         f"{difference(a['difference'])} | {a['seeds_favouring_arm']} / {a['seeds_favouring_versus']} | "
                         f"{p(a['p_value'])} | {p(a['p_holm']) if 'p_holm' in a else 'n/a'} |")
        lines += ["", ("Δ = arm − vs on the same items (doc_id, filter), per-item scores from lm-eval's log_samples; "
                  "interval and p: t over seeds; p_holm with the report's other across-seed tests.")]
    lines += ["", f"Harness switches: {settings(b['switches'])}.", ""]
    return lines
