"""The report's PNG plots, drawn from `report.json`'s data (matplotlib, Agg backend, no display).

- `plot_seed_differences`: what the verdicts test: arm − vs per seed (a dot each), the across-seed mean with
  its 95% interval and a zero line; one panel per metric (the primary's first), one row per comparison,
  the primary comparison marked.
- `plot_accuracy`: word accuracy of every model, one point per seed with its Wilson 95% interval,
  a black bar at the mean over seeds.
- `plot_eval_loss`: completion eval loss of every trained model, one point per seed, a bar at the mean.
- `plot_accuracy_vs_k`: mean accuracy over seeds against k for each arm family built at several k,
  with the seeds' range as error bars.
- `plot_benchmarks`: each lm-eval task's first metric per model and seed, with the harness's stderr.
- `plot_training_loss`: the training loss per logged step of every training, one panel per model
  (the base adapter, each arm), one line per seed.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from playpen_attribution.report.comparisons import METRICS

SEED_COLOURS = ("#d1495b", "#00798c", "#edae49", "#66a182", "#2e4057", "#8d96a3", "#9b5de5", "#f15bb5")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _models(arms: list[dict]) -> list[str]:
    names: list[str] = []
    for arm in arms:
        if arm["name"] not in names:
            names.append(arm["name"])
    return names


def _seed_offsets(arms: list[dict]) -> dict:
    seeds = sorted({a["seed"] for a in arms if a["seed"] is not None})
    width = 0.5
    step = width / max(1, len(seeds))
    return {s: -width / 2 + step * (i + 0.5) for i, s in enumerate(seeds)} | {None: 0.0}


def _per_model_points(ax, arms: list[dict], key: str, with_interval: bool) -> None:
    names = _models(arms)
    offsets = _seed_offsets(arms)
    seeds = [s for s in offsets if s is not None]
    labelled = set()
    for arm in arms:
        if arm.get(key) is None:
            continue
        x = names.index(arm["name"]) + offsets[arm["seed"]]
        colour = "#555555" if arm["seed"] is None else SEED_COLOURS[seeds.index(arm["seed"]) % len(SEED_COLOURS)]
        label = None if arm["seed"] in labelled else ("shared" if arm["seed"] is None else f"seed {arm['seed']}")
        labelled.add(arm["seed"])
        if with_interval and arm.get("ci_low") is not None:
            err = [[arm[key] - arm["ci_low"]], [arm["ci_high"] - arm[key]]]
            ax.errorbar(x, arm[key], yerr=err, fmt="o", color=colour, capsize=3, ms=5, label=label)
        else:
            ax.plot(x, arm[key], "o", color=colour, ms=6, label=label)
    values = defaultdict(list)
    for arm in arms:
        if arm.get(key) is not None:
            values[arm["name"]].append(arm[key])
    for i, name in enumerate(names):
        if values[name]:
            mean = sum(values[name]) / len(values[name])
            ax.hlines(mean, i - 0.32, i + 0.32, color="black", lw=2, label="mean over seeds" if i == 0 else None)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def plot_accuracy(arms: list[dict], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.1 * len(_models(arms)) + 3, 4.2))
    _per_model_points(ax, arms, "accuracy", with_interval=True)
    ax.set_ylim(-0.02, 1.05)
    ax.set_ylabel("word accuracy on eval (Wilson 95% CI)")
    ax.set_title("Eval word accuracy by model and seed")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_eval_loss(arms: list[dict], path: Path) -> None:
    """The untrained base model is left out (its loss is off the scale) and named in the title."""
    plt = _pyplot()
    base = next((a.get("eval_loss") for a in arms if a["name"] == "base"), None)
    arms = [a for a in arms if a["name"] != "base"]
    fig, ax = plt.subplots(figsize=(1.1 * len(_models(arms)) + 3, 4.2))
    _per_model_points(ax, arms, "eval_loss", with_interval=False)
    ax.set_ylabel("eval completion loss (mean token NLL)")
    ax.set_title("Eval loss by model and seed (lower is better)"
                 + (f"; base model {base:.2f}, not drawn" if base is not None else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_vs_k(arms: list[dict], path: Path) -> None:
    plt = _pyplot()
    by_family: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for arm in arms:
        if arm.get("family") and arm.get("k") and arm.get("accuracy") is not None:
            by_family[arm["family"]][arm["k"]].append(arm["accuracy"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    all_k = sorted({k for per_k in by_family.values() for k in per_k})
    nudge = (all_k[-1] - all_k[0]) * 0.012 if len(all_k) > 1 else 1.0  # keep the families' error bars apart
    for i, (family, per_k) in enumerate(sorted(by_family.items())):
        ks = sorted(per_k)
        means = [sum(per_k[k]) / len(per_k[k]) for k in ks]
        err = [[m - min(per_k[k]) for k, m in zip(ks, means, strict=True)],
               [max(per_k[k]) - m for k, m in zip(ks, means, strict=True)]]
        shift = (i - (len(by_family) - 1) / 2) * nudge
        ax.errorbar([k + shift for k in ks], means, yerr=err, marker="o", capsize=3, label=family,
                    color=SEED_COLOURS[i % len(SEED_COLOURS)])
    ax.set_xticks(all_k)
    ax.set_xlabel("k (rows per arm)")
    ax.set_ylabel("word accuracy (mean over seeds; bars: seed range)")
    ax.set_title("Accuracy vs k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_benchmarks(results: list[dict], path: Path) -> None:
    """One panel per lm-eval task: its first metric for every model, one point per seed with the harness's
    stderr as a 95% interval (value ± 1.96 stderr), a bar at the mean over seeds."""
    plt = _pyplot()
    tasks: dict[str, tuple[str, str]] = {}
    for r in results:
        tasks.setdefault(r["task"], (r["metric"], r["filter"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=((1.1 * len(_models(results)) + 3) * len(tasks), 4.2),
                             squeeze=False)
    for ax, (task, (metric, filt)) in zip(axes[0], tasks.items(), strict=True):
        points = []
        for r in results:
            if r["task"] == task and r["metric"] == metric and r["filter"] == filt and r["value"] is not None:
                err = 1.96 * (r["stderr"] or 0.0)
                points.append({"name": r["name"], "seed": r["seed"], "value": r["value"],
                               "ci_low": r["value"] - err, "ci_high": r["value"] + err})
        _per_model_points(ax, points, "value", with_interval=True)
        ax.set_ylabel(f"{metric} ({filt}), ±1.96 harness stderr")
        ax.set_title(f"lm-eval {task}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training_loss(curves: list[dict], path: Path) -> None:
    """`curves`: {name, seed, steps, losses} per training (seed None: a shared base adapter). One panel per
    name, in the order given, one line per seed in the seed colours; the y axis shared."""
    plt = _pyplot()
    names = _models(curves)
    seeds = sorted({c["seed"] for c in curves if c["seed"] is not None})
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows + 0.6), sharey=True, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for c in (c for c in curves if c["name"] == name):
            colour = "#555555" if c["seed"] is None else SEED_COLOURS[seeds.index(c["seed"]) % len(SEED_COLOURS)]
            ax.plot(c["steps"], c["losses"], marker=".", color=colour,
                    label="shared" if c["seed"] is None else f"seed {c['seed']}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("training loss")
    fig.suptitle("Training loss per logged step, by model and seed")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def seed_differences(report: dict) -> list[dict]:
    """The difference plot's data: per metric the comparisons have (the primary's first, then `METRICS` order),
    {metric, comparisons (every row's label, shared by the panels), rows}; a row per comparison with that metric:
    {row (its index), seeds, per_seed, mean, ci_low, ci_high, verdict, primary}."""
    aggregate, primary = report["aggregate"], report.get("primary") or {}
    names = [m for m in METRICS if any(m in a["metrics"] for a in aggregate)]
    names.sort(key=lambda m: m != primary.get("metric"))
    panels = []
    for metric in names:
        rows = []
        for i, agg in enumerate(aggregate):
            test = agg["metrics"].get(metric)
            if test is not None:
                rows.append({"row": i, "seeds": agg["seeds"], "per_seed": test["per_seed"], "mean": test["mean"],
                             "ci_low": test.get("ci_low"), "ci_high": test.get("ci_high"), "verdict": test["verdict"],
                             "primary": (agg["arm"], agg["versus"], metric) == (
                                 primary.get("arm"), primary.get("versus"), primary.get("metric"))})
        panels.append({"metric": metric, "comparisons": [f"{a['arm']} − {a['versus']}" for a in aggregate],
                       "rows": rows})
    return panels


def plot_seed_differences(report: dict, path: Path) -> None:
    """Arm − vs per seed (one dot per seed, in the seed colours), the across-seed mean (black diamond) with its
    95% interval, a zero line; one panel per metric, one row per comparison; the primary comparison shaded and
    its label bold, each row's verdict at the right."""
    plt = _pyplot()
    panels = seed_differences(report)
    labels = panels[0]["comparisons"]
    seeds = sorted({s for a in report["aggregate"] for s in a["seeds"]})
    height = 0.55 * len(labels) + 1.9
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels) + 2.2, height), sharey=True, squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        ax.tick_params(axis="y", left=ax is axes[0][0])
        metric = METRICS[panel["metric"]]
        ax.axvline(0, color="#888888", lw=1, ls="--")
        for r in panel["rows"]:
            y = r["row"]
            if r["primary"]:
                ax.axhspan(y - 0.45, y + 0.45, color="#f6e7b0", alpha=0.6, lw=0)
            for j, (seed, d) in enumerate(zip(r["seeds"], r["per_seed"], strict=True)):
                ax.plot(d, y + 0.22 * (j / max(1, len(r["seeds"]) - 1) - 0.5), "o", ms=4.5, alpha=0.85,
                        color=SEED_COLOURS[seeds.index(seed) % len(SEED_COLOURS)])
            if r["ci_low"] is not None:
                ax.hlines(y - 0.3, r["ci_low"], r["ci_high"], color="black", lw=2)
            ax.plot(r["mean"], y - 0.3, "D", color="black", ms=5)
            ax.annotate(VERDICT_WORDS.get(r["verdict"], r["verdict"]), (1.0, y), xycoords=("axes fraction", "data"),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=7, color="#444444")
        favours = "> 0" if metric.higher_is_better else "< 0"
        ax.set_xlabel(f"Δ {metric.label} (arm − vs; {favours} favours the arm)", fontsize=8)
        primary_metric = any(r["primary"] for r in panel["rows"])
        ax.set_title(metric.label + (" (primary metric)" if primary_metric else ""), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    ax0 = axes[0][0]
    ax0.set_yticks(range(len(labels)))
    ax0.set_yticklabels(labels, fontsize=8)
    ax0.set_ylim(len(labels) - 0.5, -0.5)
    primary_rows = {r["row"] for p in panels for r in p["rows"] if r["primary"]}
    for i, tick in enumerate(ax0.get_yticklabels()):
        if i in primary_rows:
            tick.set_fontweight("bold")
    handles = [plt.Line2D([], [], ls="", marker="o", color=SEED_COLOURS[i % len(SEED_COLOURS)], label=f"seed {s}")
               for i, s in enumerate(seeds)]
    handles.append(plt.Line2D([], [], color="black", marker="D", ms=5, lw=2, label="mean, 95% interval"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle("Arm − vs on the same eval rows: each seed, and the across-seed mean with its 95% interval "
                 "(primary comparison in bold, shaded)", fontsize=10)
    fig.tight_layout(rect=(0, 0.35 / height, 1, 1))  # room for the legend below
    fig.savefig(path, dpi=120)
    plt.close(fig)


VERDICT_WORDS = {"arm": "arm better", "versus": "vs better", "none": "no difference", "one_seed": "one seed",
                 "no_replication": "no replication", "gated": "not claimed"}
"""A verdict in the difference plot's margin."""
