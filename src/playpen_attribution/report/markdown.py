"""`report.md` from the report's data: the setup, the answer, tables across and per seed, plots, cost.

Accuracy cells read `62/152 = 0.4079 [0.33, 0.49]` (count, accuracy, Wilson 95% interval);
differences read `+0.030 [-0.020, +0.080]` (mean, 95% interval; `*` when the interval was cut to the
metric's range). The answer comes first: a control's PASSED / FAILED line, the primary comparison, the
secondary ones, then what makes a comparison unreliable (warnings); then the first figure, arm − vs per
seed with the interval (`differences.png`). Counts, settings and lists read as words, never Python reprs.
"""

from __future__ import annotations

from playpen_attribution.report.comparisons import METRICS
from playpen_attribution.report.probe_study import probe_study_lines
from playpen_attribution.run.artifacts import DIFFERENCES_PLOT

KIND_TEXT = {"top": "top {n} by {ranking}", "matched_random": "random, matched on strata x length to the top {n} by {ranking}",
             "window": "ranks {ranks} by {ranking}", "random_beyond": "{n} random rows ranked beyond {beyond} by {ranking}",
             "random": "{n} rows drawn uniformly at random", "full_pool": "the whole pool",
             "label": "{n} random rows passing the label filter, token-matched to the top {n} by {ranking}"}


def _acc(arm: dict) -> str:
    if arm.get("accuracy") is None:
        return "n/a"
    return f"{arm['correct']}/{arm['total']} = {arm['accuracy']:.4f} [{arm['ci_low']:.2f}, {arm['ci_high']:.2f}]"


def _other_metric(arm: dict) -> str:
    """The accuracy the verdict does not use: against the transcript's guess when the target word is the
    metric, against the target word otherwise."""
    if arm.get("metric") == "target_correct":
        if arm.get("transcript_accuracy") is None:
            return "n/a"
        return f"{arm['transcript_correct']}/{arm['total']} = {arm['transcript_accuracy']:.4f}"
    if "target_total" not in arm:
        return "n/a"
    return f"{arm['target_correct']}/{arm['target_total']} = {arm['target_accuracy']:.4f}"


METRIC_TEXT = {"target_correct": ("word accuracy vs target word", "vs transcript guess"),
               "correct": ("word accuracy vs transcript guess", "vs target word")}


def _no_guess(arm: dict) -> str:
    """Generations with no parsable guess: `n (share)`; empty when the arm was not generated from."""
    if arm.get("no_guess") is None or not arm.get("total"):
        return ""
    return f"{arm['no_guess']} ({arm['no_guess'] / arm['total']:.0%})"


def _loss(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _diff(d: dict | None) -> str:
    if not d or d.get("mean") is None:
        return "n/a"
    if d.get("ci_low") is None:
        return f"{d['mean']:+.3f}"
    return f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" + ("*" if d.get("clipped") else "")


def _p(value: float | None) -> str:
    if value is None:
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _p_is(value: float | None, name: str = "p") -> str:
    """A p-value in a sentence: `p < 0.001`, `p = 0.012`."""
    text = _p(value)
    return f"{name} {text[0]} {text[1:]}" if text.startswith("<") else f"{name} = {text}" if value is not None else f"{name} n/a"


def _value(value) -> str:
    """A setting's value in words: yes / no, n/a, a list joined."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "n/a"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_value, value))
    return str(value)


def _counts(counts: dict | None) -> str:
    """`{"success": 3, "failure": 1}` as `3 success, 1 failure`."""
    return ", ".join(f"{n} {what}" for what, n in counts.items()) if counts else "none"


def _settings(settings: dict) -> str:
    """`{"limit": None, "log_samples": True}` as `limit n/a, log_samples yes`."""
    return ", ".join(f"{k} {_value(v)}" for k, v in settings.items())


def _describe_arm(spec: dict) -> str:
    text = KIND_TEXT.get(spec.get("kind"), "{kind}")
    ranks = spec.get("ranks")
    return text.format(n=spec.get("n"), ranking=spec.get("ranking"), beyond=spec.get("beyond"), kind=spec.get("kind"),
                       ranks=f"{ranks[0]}-{ranks[1]}" if ranks else None)


def _setup_lines(report: dict) -> list[str]:
    setup = report["setup"]
    lines = ["## Setup", ""]
    train, arm_train = setup.get("train") or {}, setup.get("arm_train") or {}
    start = ("continues the base adapter" if arm_train.get("init") == "base_adapter"
             else f"trains a fresh LoRA r={arm_train.get('lora', {}).get('r')} on the base model")
    lines.append(f"- Model: `{setup.get('model')}`; base adapter: LoRA r={train.get('lora', {}).get('r')}, "
                 f"lr {train.get('learning_rate')}, {train.get('epochs')} epochs on the whole pool (it is what "
                 f"attribution scores under); each arm {start} with lr {arm_train.get('learning_rate')}, "
                 f"{arm_train.get('epochs')} epochs.")
    if "data" in report:
        rows = report["data"]["rows"]
        lines.append(f"- Data: {rows.get('train_base')} pool rows, {rows.get('attr_query')} attribution queries, "
                     f"{rows.get('eval')} eval rows; dropped: {_counts(report['data']['dropped'])}.")
        if rows.get("candidates") is not None:
            lines.append(f"- Candidates: {rows['candidates']} new rows never scored by gradients; the predictor "
                         "arms (and their matched controls) are drawn from them, ranked by the predictor fitted on "
                         "the scored pool.")
    select = setup.get("select") or {}
    ks = [select.get("k"), *select.get("extra_k", [])]
    lines.append(f"- Arms: k = {', '.join(str(k) for k in ks)}; a matched random control is drawn from the whole pool "
                 "(what a user would otherwise have picked, so it may share rows with the arm it is matched to); "
                 "matched_random_rest arms draw from the rows outside it (the seed's control).")
    seeds = setup.get("seeds") or []
    lines.append(f"- Seeds: {', '.join(map(str, seeds)) or 'none'}; each seed redraws the random arms and trains every "
                 f"arm with that seed; the base adapter is "
                 f"{'retrained per seed (attribution and selection too)' if setup.get('retrain_base') else 'shared by all seeds'}.")
    attribute = setup.get("attribute") or {}
    if attribute:
        lines.append("- Attribution: " + _settings({k: v for k, v in attribute.items() if k != "cache_dir"}) + ".")
    if report.get("untracked_modules"):
        lines.append(f"- **Attribution did not see {_value(report['untracked_modules'])}**: the base adapter trains them in "
                     "full (modules_to_save) and Bergson tracks only LoRA modules; allowed by "
                     "attribute.allow_untracked_modules, so the scores cover part of what training changed.")
    metric = next((a.get("metric") for a in report["arms"] if a.get("accuracy") is not None), None)
    if metric:
        eval_outcomes = ((report.get("data") or {}).get("outcomes") or {}).get("eval") or {}
        mix = ", ".join(f"{n} {outcome}" for outcome, n in sorted(eval_outcomes.items()))
        lines.append(f"- Metrics: {METRIC_TEXT[metric][0]} (greedy generation, the word after `GUESS:`: it also reads "
                     "whether an arm learned the answer format); choice accuracy (the target word ranked first among "
                     "the eval's target words by the likelihood of the completion with each as the guess: what an arm "
                     "knows, however it writes); eval loss" + (f"; eval games: {mix}." if mix else "."))
    mt = report.get("multiple_testing") or {}
    lines += [("- Statistics: across seeds, the mean of the paired per-row differences (arm − vs, same eval rows) "
               "with a 95% t interval and t-test whose variance is seed to seed (a seed redraws the random arms and "
               "retrains) plus the eval rows' own (crossed, Satterthwaite degrees of freedom), so a verdict holds for "
               f"new seeds and new eval rows. The primary comparison is tested alone at {mt.get('alpha', 0.05)}; the "
               f"{mt.get('secondary_tests', 0)} other across-seed tests are Holm-adjusted together (`p_holm`) and "
               "claimed only when the primary holds (a fixed sequence). A test that finds nothing gives the "
               "smallest difference the design detects at 80% power. Per seed: exact McNemar on binary metrics, a "
               "paired bootstrap interval on eval loss (descriptive, adjusted apart)."), ""]
    return lines


def _verdict(agg: dict, metric: str) -> str:
    """One comparison on one metric, in words: the verdict, the difference, its test and the seeds."""
    test, m = agg["metrics"][metric], METRICS[metric]
    arm, versus, verdict = agg["arm"], agg["versus"], test["verdict"]
    better = "has a lower eval loss than" if metric == "eval_loss" else "is better than"
    worse = "has a higher eval loss than" if metric == "eval_loss" else "is worse than"
    head = {"arm": f"**{arm} {better} {versus}**", "versus": f"**{arm} {worse} {versus}**",
            "none": f"no reliable difference between {arm} and {versus}",
            "one_seed": f"{arm} vs {versus}: one seed, training variance not measured, no verdict",
            "no_replication": f"{arm} vs {versus}: no replication, the seeds' differences agree to rounding (the "
                              "seed changed nothing), no verdict",
            "gated": f"{arm} vs {versus}: not claimed (significant after Holm, but the primary comparison did not "
                     "hold, and a fixed sequence tests the rest only after it)"}[verdict]
    p = _p_is(test["p_value"]) + (", " + _p_is(test["p_holm"], "p_holm") if "p_holm" in test else "")
    text = f"{head} on {m.label}: Δ {_diff(test)}"
    if test["status"] == "tested":
        text += f", {p}"
    text += (f"; seeds favouring {arm} / {versus}: {test['seeds_favouring_arm']} / {test['seeds_favouring_versus']} "
             f"of {len(test['per_seed'])}")
    if verdict == "none" and test.get("mde") is not None:
        text += f"; underpowered for smaller effects: this design detects |Δ| ≥ {test['mde']:.3f} at 80% power"
    return text + "."


CONTROL_TEXT = {"arm_better": "{arm} better than {versus}", "versus_better": "{arm} worse than {versus}",
                "no_difference": "no reliable difference between {arm} and {versus}"}


def _control_lines(report: dict) -> list[str]:
    control, primary = report.get("control"), report.get("primary")
    if control is None:
        return []
    if primary is None:
        return ["**Control FAILED**: the run made no comparison.", ""]
    names = {"arm": primary["arm"], "versus": primary["versus"]}
    expected = CONTROL_TEXT[control["expect"]].format(**names)
    found = {"arm_better": CONTROL_TEXT["arm_better"], "versus_better": CONTROL_TEXT["versus_better"],
             "no_difference": CONTROL_TEXT["no_difference"]}
    verdict = primary.get("verdict")
    found_text = {"arm": found["arm_better"], "versus": found["versus_better"], "none": found["no_difference"]}.get(
        verdict, f"no verdict ({verdict})").format(**names)
    head = "**Control PASSED**" if control["passed"] else "**Control FAILED**"
    seeds = ""
    if control.get("seeds_agree") is not None:
        seeds = "; every seed agrees" if control["seeds_agree"] else "; not every seed agrees"
    metric = METRICS[primary["metric"]].label
    return [(f"{head}: a control experiment with a known answer. Expected {expected} on {metric}; found "
             f"{found_text}{seeds}."), ""]


def _warning_lines(report: dict) -> list[str]:
    out = []
    for w in report.get("warnings", []):
        where = f"{w['model']}" + (f" (seed {w['seed']})" if w["seed"] is not None else "")
        if w["kind"] == "not_converged":
            out.append(f"- **{where} did not finish learning**: its training loss was still falling when training "
                       f"stopped (the last quarter lowered it by {w['late_drop']:.0%} of the whole drop; final loss "
                       f"{w['final_loss']:.3f}); a comparison with it may read how far the schedule got.")
        else:
            out.append(f"- **{where} wrote no guess in {w['share']:.0%} of the eval rows**: its word accuracy reads "
                       "whether it learned the answer format; choice accuracy reads what it knows.")
    return ["### Warnings", "", *out, ""] if out else []


def _missing_lines(report: dict) -> list[str]:
    """Reported with --allow-incomplete: which planned units the numbers lack."""
    if not report.get("missing_units"):
        return []
    return ["- **Incomplete sweep:** no evaluation for " + ", ".join(
        f"{u['arm']} (seed {u['seed']})" for u in report["missing_units"]) + "; the comparisons use the seeds that exist."]


def _answer_lines(report: dict) -> list[str]:
    lines = ["## Answer", "", *_control_lines(report), *_missing_lines(report)]
    primary = report.get("primary")
    aggs = {(a["arm"], a["versus"]): a for a in report["aggregate"]}
    if primary is None:
        return lines + ["- No arm was tested against another (no `versus` arm ran).", ""]
    declared = "declared in the config" if primary["declared"] else "not declared: the default, top_k against its control"
    lines.append(f"- Primary comparison ({declared}), tested alone at α = "
                 f"{report['multiple_testing']['alpha']}: " + _verdict(aggs[(primary["arm"], primary["versus"])],
                                                                       primary["metric"]))
    rest = [(agg, metric) for agg in report["aggregate"] for metric in agg["metrics"]
            if (agg["arm"], agg["versus"], metric) != (primary["arm"], primary["versus"], primary["metric"])]
    if rest:
        lines += ["", f"Secondary comparisons (Holm over {report['multiple_testing']['secondary_tests']} tests"
                  + ("" if report["multiple_testing"]["primary_holds"] else "; not claimed, the primary did not hold")
                  + "):", ""]
        lines += [f"- {_verdict(agg, metric)}" for agg, metric in rest]
    return lines + [""] + _warning_lines(report)


def _aggregate_table(report: dict) -> list[str]:
    lines = ["## Across seeds", "",
             "| arm | vs | metric | seeds | arm (mean) | vs (mean) | Δ [95% CI] | seeds arm / vs / tie | p | p_holm | verdict | detects at 80% power |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for agg in report["aggregate"]:
        for metric, t in agg["metrics"].items():
            mde = f"\\|Δ\\| ≥ {t['mde']:.3f}" if t.get("mde") is not None else ""  # escaped: a bare | splits the cell
            lines.append(f"| {agg['arm']} | {agg['versus']} | {METRICS[metric].label} | {len(agg['seeds'])} | "
                         f"{t['arm_mean']:.4f} | {t['versus_mean']:.4f} | {_diff(t)} | "
                         f"{t['seeds_favouring_arm']} / {t['seeds_favouring_versus']} / {t['seeds_tied']} | "
                         f"{_p(t['p_value'])} | {_p(t.get('p_holm')) if 'p_holm' in t else 'primary'} | "
                         f"{t['verdict']} | {mde} |")
    lines += ["", ("Δ = arm − vs (a negative Δ eval loss favours the arm); `*`: the interval was cut to the metric's "
                   "range. p: the across-seed t-test; p_holm: Holm over the secondary tests (the primary is tested "
                   "alone). Verdicts: arm / versus (that side reliably better), none, one_seed, no_replication, "
                   "gated (significant, but the primary did not hold)."), ""]
    return lines


def _training(arm: dict) -> str:
    t = arm.get("training")
    if not t or t.get("final_loss") is None:
        return " | "
    acc = "" if t.get("token_accuracy") is None else f", token acc {t['token_accuracy']:.2f}"
    done = {True: "yes", False: "**no**", None: "n/a"}[t.get("converged")]
    return f"{t['final_loss']:.3f}{acc} | {done}"


def _seed_tables(report: dict) -> list[str]:
    metric = next((a.get("metric") for a in report["arms"] if a.get("accuracy") is not None), "correct")
    main, other = METRIC_TEXT[metric]
    lines = []
    for seed in [None] + sorted({a["seed"] for a in report["arms"] if a["seed"] is not None}):
        arms = [a for a in report["arms"] if a["seed"] == seed]
        if not arms:
            continue
        lines += ["## Shared models" if seed is None else f"## Seed {seed}", "",
                  f"| model | {main} [95% CI] | {other} | no guess | choice accuracy (MRR) | eval loss | final train loss | converged |",
                  "|---|---|---|---|---|---|---|---|"]
        for arm in arms:
            choice = (f"{arm['choice_accuracy']:.4f} ({arm['choice_mrr']:.3f})" if arm.get("choice_accuracy") is not None
                      else "n/a")
            lines.append(f"| {arm['name']} | {_acc(arm)} | {_other_metric(arm)} | {_no_guess(arm)} | {choice} | "
                         f"{_loss(arm.get('eval_loss'))} | {_training(arm)} |")
        tests = [c for c in report["comparisons"] if c["seed"] == seed and c["metrics"]]
        if tests:
            lines += ["", "| arm | vs | metric | Δ | test | p | p_holm (per-seed tests) |", "|---|---|---|---|---|---|---|"]
            for c in tests:
                for name, t in c["metrics"].items():
                    shown = _diff(t["interval"]) if "interval" in t else f"{t['difference']:+.4f}"
                    if "mcnemar" in t:
                        shown += f" ({t['mcnemar']['a_only']} / {t['mcnemar']['b_only']} rows)"
                    lines.append(f"| {c['arm']} | {c['versus']} | {METRICS[name].label} | {shown} | {t['test']} | "
                                 f"{_p(t['p_value'])} | {_p(t.get('p_holm'))} |")
        lines.append("")
    return lines


DIVERSITY_RATIO = 0.8
"""An arm covering fewer than this share of its control's distinct target words is pointed out."""


def _selection_lines(report: dict) -> list[str]:
    if "selection" not in report:
        return []
    seed, arms = next(iter(report["selection"].items()))
    planted = any("planted" in spec for spec in arms.values())
    lines = [f"## Arms (seed {seed}; random arms are redrawn per seed)", "",
             "| arm | what | rows | tokens (completion) | outcomes | groups | target words | eval targets covered |"
             + (" planted rows | clean rows |" if planted else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|---|" if planted else "")]
    for name, spec in arms.items():
        coverage = spec.get("eval_target_coverage")
        budget = f"{spec['tokens']} ({spec['completion_tokens']})" if spec.get("completion_tokens") is not None else spec["tokens"]
        what = _describe_arm(spec) + (" (from the candidates)" if spec.get("split") == "candidates" else "")
        cells = [name, what, spec["rows"], budget, _counts(spec["outcomes"]), spec.get("groups", "n/a"),
                 spec.get("target_words", "n/a"), "n/a" if coverage is None else f"{coverage:.2f}"]
        if planted:
            cells += [_counts(spec.get("planted")), f"{spec['clean_fraction']:.3f}" if "clean_fraction" in spec else "n/a"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    notes = []
    for name, spec in arms.items():
        main = (spec.get("versus") or [None])[0]
        control = arms.get(main or "")
        if (control and spec.get("target_words") and control.get("target_words")
                and spec["target_words"] < DIVERSITY_RATIO * control["target_words"]):
            notes.append(f"- **{name} is much less diverse than {main}**: {spec['target_words']} distinct "
                         f"target words against {control['target_words']} (eval targets covered "
                         f"{spec.get('eval_target_coverage', 0):.2f} vs {control.get('eval_target_coverage', 0):.2f}); "
                         "a loss may come from what it lacks rather than from what it holds.")
    return lines + [""] + (notes + [""] if notes else [])


def _cost_lines(report: dict) -> list[str]:
    sweep = report["sweep"]
    lines = ["## Cost", "", f"Wall time: {report['wall_seconds']:.1f} s in all stages"
             + (f"; {sweep['trainings']} arm trainings, {sweep['mean_training_seconds']:.1f} s each on average."
                if sweep["trainings"] else "."), "", "| stage | seconds | throughput | peak memory |", "|---|---|---|---|"]
    speed, peak = report.get("real_model", {}), report.get("stage_peak_rss_mb", {})
    per_seed: dict[str, float] = {}
    for name, seconds in report["stage_seconds"].items():
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


def _predictor_lines(report: dict) -> list[str]:
    """Every predictor variant next to the baselines, on the same held-out rows (predict/metrics.json)."""
    predictor = report.get("predictor") or {}
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
            f" ({predictor.get('probe_pooling', 'mean')} pooling; ranks probe_top_k)" if name == "residual" else "")
        lines.append(f"| {label} | {num(m.get('spearman'))} | {num(m.get('pearson'))} | {num(m.get('r2'))} | "
                     f"{num(m.get('top_k_overlap'))} | {num(m.get('auroc'))} | {num(m.get('auroc_top_decile'))} | "
                     f"{regularisation(m)} |")
    lines += ["", (f"Top-k: the top {next(iter(models.values()))['top_k']} rows of {predictor.get('scored_rows')}; "
                   "every model on the same grouped folds. sae: stats + feature means; sae_topk: stats + each row's "
                   "top-K features; sae_logistic: a classifier of the top decile (its score is P(top decile)); "
                   "sae@L: the sae design on block L; length, residual: the baselines.")]
    for name, why in (predictor.get("null_metrics") or {}).items():
        lines.append(f"{name}: {why}.")
    for name, why in (predictor.get("skipped_models") or {}).items():
        lines.append(f"{name} not fitted: {why}.")
    if predictor.get("candidates_ranked") is not None:
        lines.append(f"{predictor['candidates_ranked']} candidate rows (never scored by gradients) ranked by {fed} and "
                     "the probe fitted on every scored row (predict/candidate_scores.jsonl).")
    return lines + [""]


def _benchmark_lines(report: dict) -> list[str]:
    b = report.get("benchmarks")
    if not b:
        return []
    lines = ["## Benchmarks (lm-eval)", "", "| model | seed | task | metric | value ± stderr | items |", "|---|---|---|---|---|---|"]
    for r in b["results"]:
        value = "n/a" if r["value"] is None else f"{r['value']:.4f}" + (
            f" ± {r['stderr']:.4f}" if r["stderr"] is not None else "")
        seed = "shared" if r["seed"] is None else r["seed"]
        lines.append(f"| {r['name']} | {seed} | {r['task']} | {r['metric']} ({r['filter']}) | {value} | {r['n']} |")
    if b["aggregate"]:
        lines += ["", "| arm | vs | task | metric | seeds | items | Δ [95% CI] | seeds arm / vs | p | p_holm |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for a in b["aggregate"]:
            lines.append(f"| {a['arm']} | {a['versus']} | {a['task']} | {a['metric']} | {len(a['seeds'])} | {a['items']} | "
                         f"{_diff(a['difference'])} | {a['seeds_favouring_arm']} / {a['seeds_favouring_versus']} | "
                         f"{_p(a['p_value'])} | {_p(a['p_holm']) if 'p_holm' in a else 'n/a'} |")
        lines += ["", ("Δ = arm − vs on the same items (doc_id, filter), per-item scores from lm-eval's log_samples; "
                  "interval and p: t over seeds; p_holm with the report's other across-seed tests.")]
    lines += ["", f"Harness switches: {_settings(b['switches'])}.", ""]
    return lines


def _efficiency_lines(report: dict) -> list[str]:
    """How many random rows top_k's k rows are worth: random arms at 1x, 2x, 4x k beside top_k."""
    eff = report.get("data_efficiency")
    if not eff:
        return []
    accuracy = eff["metric"] != "eval_loss"
    what = METRICS[eff["metric"]].label
    top = eff["top_k"]
    lines = ["## Data efficiency", "",
             f"| arm | rows | tokens (first seed) | {what} (mean over seeds) | Δ vs top_k [95% CI] | p_holm | verdict |",
             "|---|---|---|---|---|---|---|",
             f"| top_k | {top['rows']} | {top['tokens']} | {_loss(top['mean'])} | | | |"]
    for r in eff["random"]:
        lines.append(f"| {r['arm']} ({r['multiple']}x k) | {r['rows']} | {r['tokens']} | {_loss(r['mean'])} | "
                     f"{_diff(r['difference']) if 'difference' in r else 'not tested'} | "
                     f"{_p(r['p_holm']) if r.get('p_holm') is not None else ''} | {r.get('verdict', '')} |")
    tested = [r for r in eff["random"] if "verdict" in r]
    worth, beats = eff.get("worth_at_least"), eff.get("beats_up_to")
    if worth is None and tested[0]["verdict"] in ("one seed", "no replication"):
        sentence = "One seed: how many random rows top_k is worth needs at least two (sweep.seeds)."
    elif worth is None:
        first = tested[0]
        sentence = (f"top_k at k = {top['rows']} rows is worth less than {first['multiple']}x k random rows: "
                    f"{first['arm']} is reliably better.")
    else:
        sentence = (f"top_k at k = {top['rows']} rows matches random rows at {worth}x k: no random arm up to "
                    f"{worth}x k is reliably better on {what}")
        sentence += (f", and top_k is reliably better than random at {beats}x k." if beats else ".")
        beyond = [r for r in tested if r["multiple"] > worth and r["verdict"] == "random better"]
        if beyond:
            sentence += f" At {beyond[0]['multiple']}x k random rows are reliably better."
    return lines + ["", sentence + " Δ = random − top_k" + (" (a negative Δ eval loss favours random)."
                                                            if not accuracy else "."), ""]


def _differences_figure(report: dict) -> list[str]:
    """The first figure, under the answer: what the verdicts test."""
    if DIFFERENCES_PLOT not in report.get("plots", []):
        return []
    return [f"![arm minus vs, per seed, with the 95% interval]({DIFFERENCES_PLOT})", "",
            ("Each dot: one seed's mean difference on the same eval rows; black: the mean over seeds with its 95% "
             "interval (unadjusted); the verdict at the right is the report's (secondary ones Holm-adjusted "
             "behind the primary)."), ""]


def render_markdown(report: dict, name: str) -> str:
    lines = [f"# {name}: which training rows teach the task?", ""]
    lines += _answer_lines(report)
    lines += _differences_figure(report)
    if report["aggregate"]:
        lines += _aggregate_table(report)
    lines += _efficiency_lines(report) + _setup_lines(report)
    lines += _seed_tables(report)
    lines += _benchmark_lines(report)
    if "attribution" in report:
        a = report["attribution"]
        lines += ["## Attribution check", "",
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
        lines.append("")
    lines += _predictor_lines(report)
    lines += probe_study_lines(report)
    lines += _selection_lines(report)
    rest = [p for p in report.get("plots", []) if p != DIFFERENCES_PLOT]
    if rest:
        lines += ["## Plots", ""] + [f"![{p.removesuffix('.png').replace('_', ' ')}]({p})" for p in rest] + [""]
    lines += _cost_lines(report)
    return "\n".join(lines)
