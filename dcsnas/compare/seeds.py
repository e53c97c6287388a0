"""Runs repeated over seeds: grouping, mean ± standard deviation per metric, and paired differences.

A difference of a point of mAP between two single runs is often seed noise; these functions turn runs
into groups whose configs differ only in ``seed`` and report every metric over the group's seeds:
mean, sample standard deviation (ddof = 1; ``None`` for a single seed) and the number of seeds ``n``.

:func:`summarize_over_seeds` works on plain records (mappings with a group key, a ``seed`` and numeric
metrics), so any table of repeated runs (``dcsnas compare``, the search-vs-random benchmark) uses it.
:func:`paired_differences` compares a group with a reference group seed by seed: the per-seed
differences d_s, their mean and a two-sided Student-t confidence interval
mean(d) ± t_{1-α/2, n-1} · sd(d) / √n (n ≥ 2 common seeds; scipy.stats.t), and :func:`paired_tests`: the
paired t-test's t = mean(d) / (sd(d) / √n) with its two-sided p, and the Wilcoxon signed-rank test's two-sided p
(scipy.stats; exact for small n), both of the null hypothesis "no difference".
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any, Mapping, Optional, Sequence

from dcsnas.config import config_hash
from dcsnas.errors import ConfigError

CONFIDENCE = 0.95
ACCURACY = ("mAP", "rank-1", "rank-5", "rank-10", "mINP")


def seed_free_hash(cfg: Any) -> str:
    """:func:`~dcsnas.config.config_hash` of a config with its ``seed`` set to 0: equal exactly for
    configs that differ at most in ``seed``."""
    return config_hash(replace(cfg, seed=0))


def mean_std(values: Sequence[float]) -> tuple[float, Optional[float], int]:
    """``(mean, sample std with ddof = 1 or None when n = 1, n)`` of ``values`` (n >= 1)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, std, n


def group_name(names: Sequence[str]) -> str:
    """A name for runs that differ in their seed: their names' common prefix without a trailing
    ``seed``/``s`` and separators (``mbv2_dcs_s0``, ``mbv2_dcs_s1`` → ``mbv2_dcs``), else the first name."""
    if len(names) == 1:
        return names[0]
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    prefix = re.sub(r"[\W_]*(seed|s)?[\W_]*$", "", prefix)
    return prefix or names[0]


def group_records(records: Sequence[Mapping[str, Any]], key: str) -> list[list[int]]:
    """Indices of ``records`` grouped by ``record[key]``, groups in order of first appearance."""
    groups: dict[Any, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(record[key], []).append(i)
    return list(groups.values())


def summarize_over_seeds(records: Sequence[Mapping[str, Any]], key: str, metrics: Sequence[str],
                         name_key: str = "run", constant: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One summary per group of ``records`` sharing ``record[key]``: ``group`` (:func:`group_name` of the
    members' ``name_key``), ``key`` (the shared value), ``runs``, ``seeds``, ``n``; for each of ``metrics``
    ``<metric>`` (mean), ``<metric>_std`` (ddof = 1, None for one seed) and ``<metric>_n`` (seeds with a
    value: missing values and ``None`` are left out); ``constant`` keys are copied from the first member.
    Two records of one group with the same seed raise :class:`ConfigError` (a run given twice under two
    names)."""
    out = []
    for members in group_records(records, key):
        rows = [records[i] for i in members]
        seeds = [r["seed"] for r in rows]
        if len(set(seeds)) < len(seeds):
            raise ConfigError(f"runs {', '.join(str(r[name_key]) for r in rows)} have the same config and "
                              f"repeat a seed ({seeds}): each seed of a group must be run once")
        summary: dict[str, Any] = {"group": group_name([str(r[name_key]) for r in rows]), key: rows[0][key],
                                   "runs": [r[name_key] for r in rows], "seeds": seeds, "n": len(rows)}
        summary.update({k: rows[0].get(k) for k in constant})
        for metric in metrics:
            values = [r[metric] for r in rows if r.get(metric) is not None]
            mean, std, n = mean_std(values) if values else (None, None, 0)
            summary.update({metric: mean, f"{metric}_std": std, f"{metric}_n": n})
        out.append(summary)
    names = [s["group"] for s in out]
    for s in out:  # distinct groups can share a prefix: fall back to their first run's name
        if names.count(s["group"]) > 1:
            s["group"] = str(s["runs"][0])
    return out


def paired_differences(records: Sequence[Mapping[str, Any]], key: str, reference: Any, metrics: Sequence[str],
                       confidence: float = CONFIDENCE) -> list[dict[str, Any]]:
    """Each group (by ``record[key]``) other than the one whose key is ``reference``, against it seed by
    seed: ``seeds`` (common to both), ``n`` and per metric ``<metric>`` = {``differences`` (group − reference,
    per common seed), ``mean``, ``std`` (ddof = 1), ``ci`` = [low, high] of the mean difference at
    ``confidence`` (None for n < 2)}. A group without a common seed has n = 0 and no statistics."""
    from scipy.stats import t

    by_seed = {}
    for members in group_records(records, key):
        by_seed[records[members[0]][key]] = {records[i]["seed"]: records[i] for i in members}
    if reference not in by_seed:
        raise ConfigError(f"the reference {reference!r} is not one of the compared groups")
    ref = by_seed[reference]
    out = []
    for group, runs in by_seed.items():
        if group == reference:
            continue
        seeds = sorted(set(runs) & set(ref))
        entry: dict[str, Any] = {key: group, "seeds": seeds, "n": len(seeds)}
        for metric in metrics:
            diffs = [runs[s][metric] - ref[s][metric] for s in seeds
                     if runs[s].get(metric) is not None and ref[s].get(metric) is not None]
            if not diffs:
                entry[metric] = None
                continue
            mean, std, n = mean_std(diffs)
            ci = None
            if std is not None:
                half = float(t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
                ci = [mean - half, mean + half]
            tests = paired_tests(diffs)
            entry[metric] = {"differences": diffs, "mean": mean, "std": std, "ci": ci,
                             "t": tests["t"], "p_t": tests["p_t"], "p_wilcoxon": tests["p_wilcoxon"]}
        out.append(entry)
    return out


def paired_tests(differences: Sequence[float]) -> dict[str, Any]:
    """Tests of paired differences d (one per seed) against "no difference": ``n``, ``mean``, ``std`` (ddof = 1),
    the paired t-test's ``t`` and two-sided ``p_t`` (None for n < 2 or a zero spread) and the Wilcoxon
    signed-rank test's two-sided ``p_wilcoxon`` (None for n < 2 or all differences 0)."""
    from scipy import stats

    if not differences:
        raise ValueError("paired_tests: no differences")
    mean, std, n = mean_std(differences)
    out: dict[str, Any] = {"n": n, "mean": mean, "std": std, "t": None, "p_t": None, "p_wilcoxon": None}
    if n < 2:
        return out
    if std:
        result = stats.ttest_1samp(differences, 0.0)
        out.update(t=float(result.statistic), p_t=float(result.pvalue))
    if any(differences):
        out["p_wilcoxon"] = float(stats.wilcoxon(differences).pvalue)
    return out


def format_groups(groups: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ACCURACY) -> str:
    """The groups as an aligned text table: group, n, seeds, each metric as ``mean ± std`` in %."""
    def cell(group: Mapping[str, Any], metric: str) -> str:
        if group.get(metric) is None:
            return "-"
        std = group.get(f"{metric}_std")
        return f"{100 * group[metric]:.1f}" + ("" if std is None else f" ± {100 * std:.1f}")

    header = ["group", "n", "seeds", *metrics]
    lines = [header] + [[str(g["group"]), str(g["n"]), ",".join(map(str, g["seeds"])),
                         *(cell(g, m) for m in metrics)] for g in groups]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip()
            for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    text.append("over seeds: mean ± sample standard deviation (ddof = 1) in %; n: seeds; groups: configs that differ "
                "only in seed")
    return "\n".join(text)


def format_paired(pairs: Sequence[Mapping[str, Any]], key: str, reference: str, metrics: Sequence[str] = ACCURACY,
                  confidence: float = CONFIDENCE) -> str:
    """The paired view as text: per group and metric the per-seed differences, their mean and the interval,
    in points of %."""
    lines = [f"paired against {reference} (group - reference, same seeds; {100 * confidence:g}% paired t interval)"]
    for pair in pairs:
        lines.append(f"{pair[key]}: n = {pair['n']} (seeds {', '.join(map(str, pair['seeds'])) or 'none in common'})")
        for metric in metrics:
            stats = pair.get(metric)
            if stats is None:
                continue
            diffs = ", ".join(f"{100 * d:+.2f}" for d in stats["differences"])
            ci = "n < 2" if stats["ci"] is None else f"[{100 * stats['ci'][0]:+.2f}, {100 * stats['ci'][1]:+.2f}]"
            p = "" if stats.get("p_t") is None else f"  p {stats['p_t']:.3f} (Wilcoxon {stats['p_wilcoxon']:.3f})"
            lines.append(f"  {metric:<8} mean {100 * stats['mean']:+.2f}  CI {ci}{p}  per seed: {diffs}")
    return "\n".join(lines)
