"""Tables and curves from bench/results/learning.json -> stdout (markdown) and docs/learning_<env>.png.

    python bench/plot_learning.py [RESULTS.json [FIGURE_PREFIX]]     # -> docs/<FIGURE_PREFIX>_<env>.png
"""
from __future__ import annotations

import json
import os
import sys


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from bench.vs_ppo import _median_iqr     # noqa: E402  (the censored median vs_ppo.json reports)


def main(path: str = os.path.join(HERE, "results", "learning.json"), prefix: str = "learning") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    data = json.load(open(path))
    print("| env | agent | seed | env steps to threshold | seconds | final sampled / deterministic |")
    print("|---|---|---|---|---|---|")
    for env, agents in data.items():
        if env == "debug":
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for i, (agent, seeds) in enumerate(agents.items()):
            for seed, r in sorted(seeds.items()):
                h = r["history"]
                ax.plot([x["step"] for x in h], [x["eval/return_sampled"] for x in h], color=f"C{i}", alpha=0.7,
                        label=agent if seed == sorted(seeds)[0] else None)
                steps = r["steps_to_threshold"]
                print(f"| {env} | {agent} | {seed} | {steps if steps is not None else 'not reached'} | "
                      f"{r['seconds_to_threshold'] if steps is not None else '—'} | "
                      f"{r['final_return_sampled']:.3f} / {r['final_return']:.3f} |")
            steps = [r["steps_to_threshold"] for r in seeds.values()]
            solved = [s for s in steps if s is not None]
            # unsolved seeds count as beyond the budget (censored), as in vs_ppo.json
            median = _median_iqr(steps)[0]
            shown = f"**{int(median)}**" if median is not None else "**beyond the budget**"
            print(f"| {env} | {agent} | **median** | {shown} ({len(solved)}/{len(seeds)} seeds solved"
                  f"{'; unsolved seeds counted as beyond the budget' if len(solved) < len(seeds) else ''}) | | |")
        ax.axhline(next(iter(next(iter(agents.values())).values()))["threshold"], color="k", ls="--", lw=1)
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval return (sampled)")
        ax.set_title(env)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(HERE, "..", "docs", f"{prefix}_{env}.png"), dpi=80)
        plt.close(fig)


if __name__ == "__main__":
    main(*sys.argv[1:])
