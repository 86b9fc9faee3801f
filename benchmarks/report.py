#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# The benchmark's report: medians per case and server, ratios to the baseline, a markdown table, JSON and a plot.
"""Aggregates the runs of benchmarks/run.

Usage: report.py --runs RUNS.jsonl --out PREFIX [--fact KEY=VALUE ...] [--config KEY=VALUE ...]
       report.py --from-json PREFIX.json --out PREFIX2   (again, from a report's JSON: e.g. the plot of a run
                                                           made on a machine without gnuplot)
       report.py --kernel-share PERF_REPORT.txt         (benchmarks/run --profile: the kernel's share of the
                                                           samples in `perf report --sort dso --stdio -q`'s listing)

RUNS.jsonl holds one object per run: {"case", "case_label", "server", "server_label", "round", "bench_exit",
"server_exit", "kernel_share", "result"}, where "result" is unixgram-bench's --json object (null if it printed
none) and "kernel_share" the share of the server's perf samples taken in the kernel (--profile; null or absent
otherwise).
Writes PREFIX.md (also printed), PREFIX.json and PREFIX.png (with gnuplot, when it is installed).
Medians, never means: one run disturbed by another process must not move the result.
"""

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BASELINE = "baseline"
METRICS = {  # key -> (how to read it from a bench result, higher is better)
    "datagrams_per_s": (lambda r: r["datagrams_per_s"], True),
    "cpu_ns_per_datagram": (lambda r: r["server_cpu_ns_per_datagram"], False),
    "p50_us": (lambda r: r["latency_us"]["p50"], False),
    "p99_us": (lambda r: r["latency_us"]["p99"], False),
    "p999_us": (lambda r: r["latency_us"]["p999"], False),
    # The load generator's own CPU share (unixgram-bench's load_busy; absent from older runs).
    "load_busy": (lambda r: r.get("load_busy"), False),
    # benchmarks/run --profile: the server's CPU per datagram split by perf's samples into kernel and user space.
    "kernel_ns_per_datagram": (lambda r: split_cpu(r, True), False),
    "user_ns_per_datagram": (lambda r: split_cpu(r, False), False),
}


def kernel_share(perf_report_text):
    """The share (0..1) of a `perf report --sort dso --stdio -q` listing's samples taken in the kernel, or None when
    it lists none. Lines read "  90.74%  [kernel.kallsyms]"; a guest kernel's DSO is "[kernel.vmlinux]"."""
    total = kernel = 0.0
    for line in perf_report_text.splitlines():
        fields = line.split(None, 1)
        if len(fields) != 2 or not fields[0].endswith("%"):
            continue
        try:
            pct = float(fields[0][:-1])
        except ValueError:
            continue
        total += pct
        if fields[1].strip().startswith("[kernel"):
            kernel += pct
    return kernel / total if total > 0 else None


def split_cpu(result, kernel):
    """The kernel's (or user space's) part of the server's CPU per datagram, where the run was profiled."""
    share = result.get("kernel_share")
    if share is None:
        return None
    return result["server_cpu_ns_per_datagram"] * (share if kernel else 1 - share)

# Issue 3's targets (stricter than DESIGN.md §8 for ping-pong), as (case, server, metric, limit on the ratio,
# "max" or "min", reference): the reference is the baseline of the same case, another server of the same case
# ("server:<id>"), or the same server in another case ("case:<id>").
TARGETS = [
    ("16x32-64B", "io_uring", "cpu_ns_per_datagram", 1.00, "max", "baseline"),
    ("16x32-64B", "io_uring", "datagrams_per_s", 1.00, "min", "baseline"),
    ("16x32-64B", "epoll", "cpu_ns_per_datagram", 1.10, "max", "baseline"),
    ("16x32-64B", "io_uring", "cpu_ns_per_datagram", 0.60, "max", "server:asio"),
    ("16x32-64B", "epoll", "cpu_ns_per_datagram", 0.60, "max", "server:asio"),
    # The same targets for unixgram-echo --post (replies with Client::post_packet), where it ran.
    ("16x32-64B", "io_uring-post", "cpu_ns_per_datagram", 1.00, "max", "baseline"),
    ("16x32-64B", "io_uring-post", "datagrams_per_s", 1.00, "min", "baseline"),
    ("16x32-64B", "epoll-post", "cpu_ns_per_datagram", 1.10, "max", "baseline"),
    ("16x32-64B", "io_uring-post", "cpu_ns_per_datagram", 0.60, "max", "server:asio"),
    ("16x32-64B", "epoll-post", "cpu_ns_per_datagram", 0.60, "max", "server:asio"),
    ("pingpong-64B", "io_uring", "p50_us", 1.05, "max", "baseline"),
    ("pingpong-64B", "io_uring", "p99_us", 1.05, "max", "baseline"),
    ("pingpong-64B", "epoll", "p50_us", 1.05, "max", "baseline"),
    ("pingpong-64B", "epoll", "p99_us", 1.05, "max", "baseline"),
    ("1000x1-64B", "io_uring", "datagrams_per_s", 0.80, "min", "case:16x32-64B"),
    ("1000x1-64B", "epoll", "datagrams_per_s", 0.80, "min", "case:16x32-64B"),
]


def key_values(items):
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"report.py: expected KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def load_runs(path):
    runs = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    runs.append(json.loads(line))
                except json.JSONDecodeError as e:
                    sys.exit(f"report.py: {path}:{line_no}: {e}")
    return runs


def result_of(run):
    """The run's unixgram-bench result, with the run's kernel share (benchmarks/run --profile) where it has one."""
    r = run["result"]
    if r is not None and run.get("kernel_share") is not None:
        r = {**r, "kernel_share": run["kernel_share"]}
    return r


def run_ok(run):
    r = run["result"]
    return run["bench_exit"] == 0 and run["server_exit"] == 0 and r is not None and r.get("ok") is True


def aggregate(runs):
    """[(case, case_label, [(server, server_label, medians, ratios, samples, ok_runs, all_runs)])] in run order."""
    cases = {}
    for run in runs:
        case = cases.setdefault(run["case"], {"label": run["case_label"], "servers": {}})
        server = case["servers"].setdefault(run["server"], {"label": run["server_label"], "runs": []})
        server["runs"].append(run)
    out = []
    for case_id, case in cases.items():
        rows = []
        medians_of = {}
        for server_id, server in case["servers"].items():
            good = [result_of(r) for r in server["runs"] if run_ok(r)]
            samples = {m: [read(r) for r in good if read(r) is not None] for m, (read, _) in METRICS.items()}
            medians = {m: statistics.median(v) if v else None for m, v in samples.items()}
            medians_of[server_id] = medians
            rows.append([server_id, server["label"], medians, None, samples, len(good), len(server["runs"])])
        base = medians_of.get(BASELINE)
        for row in rows:
            row[3] = {m: (row[2][m] / base[m] if base and base[m] and row[2][m] is not None else None) for m in METRICS}
        out.append((case_id, case["label"], [tuple(r) for r in rows]))
    return out


def paired_by_round(runs, case_id, server_id, ref_id, combine):
    """Per round, combine(the server's result, the reference server's result in the same case and round), leaving
    out rounds where either failed or combine gives None."""
    results = {(r["case"], r["server"], r["round"]): result_of(r) for r in runs if run_ok(r)}
    out = []
    for (case, server, rnd), result in sorted(results.items(), key=lambda kv: kv[0][2]):
        if case != case_id or server != server_id:
            continue
        ref = results.get((case_id, ref_id, rnd))
        if ref is None:
            continue
        value = combine(result, ref)
        if value is not None:
            out.append(value)
    return out


def paired_ratios(runs, case_id, server_id, ref_id, metric):
    """Per round, the server's metric over the reference server's in the same case and round. The servers of a
    round run back to back, so a drift of the machine's speed between rounds (a noisy neighbour on a VM) cancels
    out of these ratios, which it does not out of a ratio of medians taken over different rounds."""
    read = METRICS[metric][0]

    def ratio(result, ref):
        a, b = read(result), read(ref)
        return a / b if a is not None and b else None

    return paired_by_round(runs, case_id, server_id, ref_id, ratio)


def median_interval(values, confidence=0.95):
    """A distribution-free interval for the median (order statistics): (low, high, coverage), or None when there
    are too few values for `confidence` (fewer than 6 for 95 %)."""
    n = len(values)
    xs = sorted(values)
    k, below = 0, 0.0  # P(Binomial(n, 1/2) <= k - 1)
    while True:
        nxt = below + math.comb(n, k) / 2**n
        if 2 * nxt > 1 - confidence:
            break
        below, k = nxt, k + 1
    if k == 0:
        return None
    return xs[k - 1], xs[n - k], 1 - 2 * below


def fmt_ratio(value, limit):
    """A ratio with two decimals, or three where two would print the limit itself for a value on one side of it
    (0.798 against a minimum of 0.80 is "0.798×", not a "0.80×" that reads as met)."""
    text = f"{value:.2f}"
    if text == f"{limit:.2f}" and value != limit:
        text = f"{value:.3f}"
    return text + "×"


def paired_note(runs, case_id, server_id, ref_id, metric, limit, kind):
    """The target's paired estimate: the median of the per-round ratios, its interval, and what it says."""
    ratios = paired_ratios(runs, case_id, server_id, ref_id, metric)
    if not ratios:
        return ""
    mid = statistics.median(ratios)
    interval = median_interval(ratios)
    if interval is None:
        return f"; paired by round: {fmt_ratio(mid, limit)} ({len(ratios)} rounds, too few for an interval)"
    low, high, coverage = interval
    if kind == "max":
        says = "met" if high <= limit else "missed" if low > limit else "undecided"
    else:
        says = "met" if low >= limit else "missed" if high < limit else "undecided"
    return (f"; paired by round: {fmt_ratio(mid, limit)}, {coverage * 100:.0f} % interval "
            f"{fmt_ratio(low, limit)[:-1]}–{fmt_ratio(high, limit)} over "
            f"{len(ratios)} rounds: {says}")


AB_METRICS = [  # (metric, how the A/B line names it)
    ("cpu_ns_per_datagram", "CPU per datagram"),
    ("datagrams_per_s", "datagrams/s"),
    ("p50_us", "p50"),
    ("p99_us", "p99"),
]


def ab_estimate(runs, case_id, variant_id, base_id, metric):
    """A twin against the same server without its tag (`<id>@<tag>` against `<id>`), round by round: (median,
    interval or None, rounds, what it says), or None when no round has both. A difference is called only where the
    whole interval lies on one side of 1.00."""
    ratios = paired_ratios(runs, case_id, variant_id, base_id, metric)
    if not ratios:
        return None
    mid = statistics.median(ratios)
    interval = median_interval(ratios)
    if interval is None:
        says = "too few rounds for an interval"
    elif interval[1] < 1.0:
        says = "lower"
    elif interval[0] > 1.0:
        says = "higher"
    else:
        says = "no difference resolved"
    return mid, interval, len(ratios), says


def ab_lines(cases, runs):
    """The A/B section: each twin (--twin-args, --compare) against its untagged server, paired by round."""
    lines = []
    for case_id, _, rows in cases:
        present = {r[0]: r[1] for r in rows}
        for server_id, label in present.items():
            base_id = server_id.split("@", 1)[0]
            if "@" not in server_id or base_id not in present:
                continue
            parts = []
            for metric, name in AB_METRICS:
                est = ab_estimate(runs, case_id, server_id, base_id, metric)
                if est is None:
                    continue
                mid, interval, n, says = est
                span = ""
                if interval:
                    span = (f", {interval[2] * 100:.0f} % interval {fmt_ratio(interval[0], 1.0)[:-1]}–"
                            f"{fmt_ratio(interval[1], 1.0)}")
                parts.append(f"{name} {fmt_ratio(mid, 1.0)}{span} over {n} rounds: {says}")
            if parts:
                lines.append(f"- {case_id}, {label} against {present[base_id]}: " + "; ".join(parts))
    if not lines:
        return []
    return [
        "",
        "A/B (each twin against the same server without it, in the same rounds): the median of the per-round ratios "
        "with a distribution-free interval; a difference is called lower or higher only where the whole interval "
        "lies on one side of 1.00:",
        "",
    ] + lines


def profile_lines(cases, runs):
    """benchmarks/run --profile: each server's CPU per datagram split into kernel and user space, and, paired by
    round against the baseline, the kernel's ratio and how much user space adds, as a share of the baseline's CPU."""
    lines = []
    for case_id, case_label, rows in cases:
        profiled = [r for r in rows if r[2].get("kernel_ns_per_datagram") is not None]
        if not profiled:
            continue
        lines += ["", f"Where the CPU goes ({case_label}): perf samples of each server over its measured interval.", ""]
        lines.append("| server | server CPU ns/datagram | kernel ns/datagram | user ns/datagram | kernel share |")
        lines.append("|---|---:|---:|---:|---:|")
        for server_id, label, med, ratio, *_ in profiled:
            share = med["kernel_ns_per_datagram"] / med["cpu_ns_per_datagram"] if med["cpu_ns_per_datagram"] else None
            lines.append(
                f"| {label} | {fmt_cell(med['cpu_ns_per_datagram'], ratio['cpu_ns_per_datagram'], 0, server_id)} | "
                f"{fmt_cell(med['kernel_ns_per_datagram'], ratio['kernel_ns_per_datagram'], 0, server_id)} | "
                f"{fmt_cell(med['user_ns_per_datagram'], ratio['user_ns_per_datagram'], 0, server_id)} | "
                f"{f'{share * 100:.1f} %' if share is not None else '–'} |"
            )
        notes = []
        for server_id, label, *_ in profiled:
            if server_id == BASELINE:
                continue
            kernel = paired_ratios(runs, case_id, server_id, BASELINE, "kernel_ns_per_datagram")
            extra = user_excess(runs, case_id, server_id)
            if not kernel or not extra:
                continue
            notes.append(f"- {label}: kernel {estimate_text(kernel, 1.0, '×')} the baseline's; user space above the "
                         f"baseline's, in % of the baseline's CPU per datagram: "
                         f"{estimate_text([e * 100 for e in extra], None, ' %')}")
        if notes:
            lines += ["", "Paired by round against the baseline (median of the rounds, distribution-free interval):",
                      ""] + notes
    return lines


def user_excess(runs, case_id, server_id):
    """Per round: (the server's user ns per datagram - the baseline's) / the baseline's CPU ns per datagram."""

    def excess(result, ref):
        mine, theirs = split_cpu(result, False), split_cpu(ref, False)
        if mine is None or theirs is None or not ref["server_cpu_ns_per_datagram"]:
            return None
        return (mine - theirs) / ref["server_cpu_ns_per_datagram"]

    return paired_by_round(runs, case_id, server_id, BASELINE, excess)


def estimate_text(values, limit, unit):
    """"1.02× (95 % interval 0.97–1.05×, 30 rounds)"; ratios printed as fmt_ratio does when unit is "×"."""
    def num(v):
        if unit != "×":
            return f"{v:.1f}"
        return fmt_ratio(v, limit)[:-1] if limit is not None else f"{v:.2f}"

    mid = statistics.median(values)
    interval = median_interval(values)
    if interval is None:
        return f"{num(mid)}{unit} ({len(values)} rounds, too few for an interval)"
    low, high, coverage = interval
    return f"{num(mid)}{unit} ({coverage * 100:.0f} % interval {num(low)}–{num(high)}{unit}, {len(values)} rounds)"


def fmt_number(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def fmt_cell(value, ratio, digits=0, server=None):
    text = fmt_number(value, digits)
    if ratio is not None and server != BASELINE:
        text += f" ({ratio:.2f}×)"
    return text


def busy(med):
    """The share of one CPU the server used: CPU per datagram × datagrams per second (medians)."""
    if not med.get("cpu_ns_per_datagram") or not med.get("datagrams_per_s"):
        return None
    return med["cpu_ns_per_datagram"] * med["datagrams_per_s"] / 1e9


def spread(samples):
    """Half the range, relative to the median: how far the rounds disagree."""
    if len(samples) < 2:
        return None
    mid = statistics.median(samples)
    return (max(samples) - min(samples)) / 2 / mid if mid else None


def scaling_lines(cases):
    """For servers named <backend>-s<S>: throughput and CPU per datagram against the same backend's 1 shard."""
    lines = []
    for case_id, case_label, rows in cases:
        by_id = {r[0]: r for r in rows}
        shards = []
        for server_id, label, med, *_ in rows:
            name, at, tag = server_id.partition("@")  # <backend>-s<S>[@<build>]: --compare's twins
            backend, sep, count = name.rpartition("-s")
            one = f"{backend}-s1{at}{tag}"
            if sep and count.isdigit() and one in by_id:
                shards.append((backend + (f" [{tag}]" if tag else ""), int(count), label, med, by_id[one][2]))
        if not shards:
            continue
        lines += ["", f"Scaling ({case_label}): each row against the same backend with 1 shard in this run.", ""]
        lines.append("| server | shards | datagrams/s | × 1 shard | server CPU ns/datagram | × 1 shard | CPUs busy |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for backend, count, label, med, one in shards:
            def vs_one(metric):
                return f"{med[metric] / one[metric]:.2f}×" if med.get(metric) and one.get(metric) else "–"

            b = busy(med)
            lines.append(
                f"| {backend} | {count} | {fmt_number(med['datagrams_per_s'])} | {vs_one('datagrams_per_s')} | "
                f"{fmt_number(med['cpu_ns_per_datagram'])} | {vs_one('cpu_ns_per_datagram')} | "
                f"{f'{b:.2f}' if b is not None else '–'} |"
            )
    return lines


def markdown(cases, facts, config, runs):
    lines = [f"# unixgram echo benchmark, {facts.get('date', '')}", ""]
    lines.append(
        f"Machine: {facts.get('nproc', '?')} CPUs ({facts.get('cpu_model', '?')}), kernel {facts.get('kernel', '?')}, "
        f"net.unix.max_dgram_qlen {facts.get('max_dgram_qlen', '?')}, net.core.wmem_default "
        f"{facts.get('wmem_default', '?')}, liburing {facts.get('liburing', '?')}, {facts.get('compiler', '?')}. "
        f"Load average before {facts.get('loadavg_start', '?')}, after {facts.get('loadavg_end', '?')}."
    )
    lines.append("")
    quick = " **Quick run (smoke test): not a measurement.**" if config.get("quick") == "true" else ""
    if config.get("scaling") == "true":
        placement = (
            f"the baseline pinned to CPU {config.get('server_cpu', '?')}, `unixgram-echo --shards S` to CPUs 0..S-1, "
            f"unixgram-bench ({config.get('load_threads', '?')} threads, the clients split among them, unconnected "
            f"autobound clients, every reply verified) to CPUs {config.get('load_cpu', '?')}"
        )
        busy_note = " Server busy is in CPUs: 100 % is one CPU's time, so S shards can reach S × 100 %."
    else:
        threads = config.get("load_threads", "1")
        placement = (
            f"server pinned to CPU {config.get('server_cpu', '?')}, unixgram-bench ("
            f"{'one thread' if threads == '1' else threads + ' threads'}, unconnected autobound clients unless the "
            f"case says connected, every reply verified) to CPU {config.get('load_cpu', '?')}"
        )
        busy_note = ""
    lines.append(
        f"Method: per case the servers run in alternation (A B C D A B C D …), {config.get('rounds', '?')} round(s); "
        f"{placement}; {config.get('warmup_s', '?')} s warmup, "
        f"{config.get('duration_s', '?')} s measured. Values are medians over the rounds, (×) the ratio to the "
        f"baseline of the same case in this run. Server CPU is utime+stime of all its threads from /proc/PID/stat "
        f"(10 ms ticks) over the measured interval, per echoed datagram; ± is half the range over the rounds. "
        f"Load busy is unixgram-bench's own CPU time over the same interval, as a share of its threads' CPUs: "
        f"near 100 %, the load generator rather than the server may have set the rate."
        f"{busy_note}{quick}"
    )
    lines.append("")
    lines.append("| case | server | datagrams/s | server CPU ns/datagram | ± | server busy | load busy | p50 µs | p99 µs | runs ok |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for case_id, case_label, rows in cases:
        for i, (server_id, label, med, ratio, samples, ok_runs, all_runs) in enumerate(rows):
            s = spread(samples["cpu_ns_per_datagram"])
            b = busy(med)
            lines.append(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{} |".format(
                    case_label if i == 0 else "",
                    label,
                    fmt_cell(med["datagrams_per_s"], ratio["datagrams_per_s"], 0, server_id),
                    fmt_cell(med["cpu_ns_per_datagram"], ratio["cpu_ns_per_datagram"], 0, server_id),
                    f"{s * 100:.0f} %" if s is not None else "–",
                    f"{b * 100:.0f} %" if b is not None else "–",
                    f"{med['load_busy'] * 100:.0f} %" if med.get("load_busy") is not None else "–",
                    fmt_cell(med["p50_us"], ratio["p50_us"], 1, server_id),
                    fmt_cell(med["p99_us"], ratio["p99_us"], 1, server_id),
                    ok_runs,
                    all_runs,
                )
            )
    by_key = {(c, r[0]): r for c, _, rows in cases for r in rows}
    lines += scaling_lines(cases)
    present = {c for c, _, _ in cases}
    # The --post servers run only in some cases and some runs: their targets only where they ran.
    targets = [t for t in TARGETS if t[0] in present and (not t[1].endswith("-post") or (t[0], t[1]) in by_key)]
    if targets:
        lines.append("")
        lines.append(
            "Targets (issue 3), ratios of medians; then, where the reference ran in the same rounds, the median of "
            "the per-round ratios (each server against the reference's run in the same round: a round's servers run back "
            "to back, so the machine's drift between rounds cancels out) with a "
            "distribution-free interval for it: met or missed when the whole interval is on one side of the "
            "limit, undecided when it straddles it:"
        )
        lines.append("")
    for case_id, server_id, metric, limit, kind, reference in targets:
        row = by_key.get((case_id, server_id))
        ratio = None
        paired = ""
        if reference == "baseline":
            ratio = row[3][metric] if row else None
            against = "the baseline"
            paired = paired_note(runs, case_id, server_id, BASELINE, metric, limit, kind)
        else:
            what, ref_id = reference.split(":", 1)
            ref = by_key.get((case_id, ref_id) if what == "server" else (ref_id, server_id))
            against = f"{ref_id}" if what == "server" else f"the same server at {ref_id}"
            if row and ref and row[2].get(metric) and ref[2].get(metric):
                ratio = row[2][metric] / ref[2][metric]
            if what == "server":
                paired = paired_note(runs, case_id, server_id, ref_id, metric, limit, kind)
        if ratio is None:
            verdict = "not measured"
        else:
            met = ratio <= limit if kind == "max" else ratio >= limit
            verdict = f"{fmt_ratio(ratio, limit)} — {'met' if met else 'MISSED'}"
        sign = "≤" if kind == "max" else "≥"
        note = ""
        share = busy(row[2]) if metric == "datagrams_per_s" and row is not None else None
        load = row[2].get("load_busy") if metric == "datagrams_per_s" and row is not None else None
        if share is not None and share < 0.9:
            load_part = f"; it was {load * 100:.0f} % busy" if load is not None else ""
            note = (f" (the server was {share * 100:.0f} % busy: the load generator, not the server, set this "
                    f"rate{load_part})")
        lines.append(f"- {case_id}, {server_id}: {metric} {sign} {limit:.2f}× {against}: {verdict}{paired}{note}")
    lines += ab_lines(cases, runs)
    lines += profile_lines(cases, runs)
    failed = [r for r in runs if not run_ok(r)]
    if failed:
        lines.append("")
        lines.append("Failed runs (left out of the medians):")
        lines.append("")
        for r in failed:
            res = r["result"] or {}
            lines.append(
                f"- {r['case']} {r['server']} round {r['round']}: bench exit {r['bench_exit']}, server exit "
                f"{r['server_exit']}, errors {res.get('errors', '?')}, lost {res.get('lost', '?')}"
            )
    return "\n".join(lines) + "\n"


def plot(cases, png, title, scaling=False):
    gnuplot = shutil.which("gnuplot")
    if gnuplot is None:
        print("report.py: gnuplot not found, no plot", file=sys.stderr)
        return False
    servers = []  # union of the servers, in first-seen order: one bar colour each
    labels = {}
    for _, _, rows in cases:
        for server_id, label, *_ in rows:
            if server_id not in labels:
                servers.append(server_id)
                labels[server_id] = label
    with tempfile.TemporaryDirectory() as tmp:
        data = {}
        for metric in ("datagrams_per_s", "cpu_ns_per_datagram", "p99_us"):
            data[metric] = Path(tmp) / f"{metric}.tsv"
            with open(data[metric], "w", encoding="utf-8") as f:
                f.write("case\t" + "\t".join(labels[s] for s in servers) + "\n")
                for case_id, _, rows in cases:
                    med = {r[0]: r[2][metric] for r in rows}
                    values = ["NaN" if med.get(s) is None else f"{med[s]:.3f}" for s in servers]
                    f.write(case_id + "\t" + "\t".join(values) + "\n")
        columns = len(servers) + 1
        # Sharding runs show throughput (what more shards buy) above CPU; the others CPU above p99.
        throughput = f"""set title "echoed datagrams per second (median)"
set ylabel "datagrams / s"
set yrange [0:*]
plot for [i=2:{columns}] "{data['datagrams_per_s']}" using i:xtic(1) title columnheader(i)
"""
        latency = f"""set title "p99 round-trip latency (median over rounds, log scale)"
set ylabel "µs"
set logscale y
set yrange [1:*]
plot for [i=2:{columns}] "{data['p99_us']}" using i:xtic(1) title columnheader(i)
"""
        # Twenty distinct colours: gnuplot's default eight repeat, and a sharding run with --compare has 17 servers.
        colours = ["#9400d3", "#009e73", "#56b4e9", "#e69f00", "#f0e442", "#0072b2", "#e51e10", "#000000",
                   "#a0a0a0", "#8b4513", "#ff69b4", "#2e8b57", "#4682b4", "#daa520", "#7b68ee", "#20b2aa",
                   "#800000", "#808000", "#000080", "#ff7f50"]
        linetypes = "".join(f'set linetype {i + 1} lc rgb "{c}"\n' for i, c in enumerate(colours))
        script = f"""{linetypes}set linetype cycle {len(colours)}
set terminal pngcairo size 1400,1000 font "sans,10" noenhanced
set output "{png}"
set datafile separator "\\t"
set datafile missing "NaN"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key outside right top vertical
set xtics nomirror
set lmargin 12
set multiplot layout 2,1 title "{title.replace('"', "'")}"
{throughput if scaling else ""}set title "server CPU per echoed datagram (median)"
set ylabel "ns / datagram"
set yrange [0:*]
plot for [i=2:{columns}] "{data['cpu_ns_per_datagram']}" using i:xtic(1) title columnheader(i)
{"" if scaling else latency}unset multiplot
"""
        result = subprocess.run([gnuplot], input=script, text=True, capture_output=True)
        if result.returncode != 0:
            print(f"report.py: gnuplot failed:\n{result.stderr}", file=sys.stderr)
            return False
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--runs", help="JSON lines written by benchmarks/run")
    source.add_argument("--from-json", help="a report's PREFIX.json: its runs, facts and configuration")
    source.add_argument("--kernel-share", metavar="FILE",
                        help="print the kernel's share of a `perf report --sort dso --stdio -q` listing (or null)")
    parser.add_argument("--out", help="output prefix: PREFIX.md, PREFIX.json, PREFIX.png")
    parser.add_argument("--fact", action="append", help="KEY=VALUE about the machine")
    parser.add_argument("--config", action="append", help="KEY=VALUE about the run")
    args = parser.parse_args()
    if args.kernel_share:
        share = kernel_share(Path(args.kernel_share).read_text(encoding="utf-8", errors="replace"))
        print("null" if share is None else f"{share:.4f}")
        return 0
    if not args.out:
        parser.error("--out is required with --runs and --from-json")
    facts = key_values(args.fact)
    config = key_values(args.config)
    if args.from_json:
        previous = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        facts = {**previous["facts"], **facts}
        config = {**previous["config"], **config}
        runs = previous["runs"]
    else:
        runs = load_runs(args.runs)
    if not runs:
        sys.exit("report.py: no runs")
    cases = aggregate(runs)

    text = markdown(cases, facts, config, runs)
    out = Path(args.out)
    Path(f"{out}.md").write_text(text, encoding="utf-8")
    summary = {
        "facts": facts,
        "config": config,
        "cases": [
            {
                "case": case_id,
                "label": case_label,
                "servers": [
                    {
                        "server": server_id,
                        "label": label,
                        "median": med,
                        "ratio_to_baseline": ratio,
                        "samples": samples,
                        "runs_ok": ok_runs,
                        "runs": all_runs,
                    }
                    for server_id, label, med, ratio, samples, ok_runs, all_runs in rows
                ],
            }
            for case_id, case_label, rows in cases
        ],
        "runs": runs,
    }
    Path(f"{out}.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    title = f"unixgram echo benchmark {facts.get('date', '')} ({facts.get('nproc', '?')} CPUs, kernel {facts.get('kernel', '?')})"
    if config.get("quick") == "true":
        title += " — quick run, not a measurement"
    plot(cases, Path(f"{out}.png").resolve(), title, scaling=config.get("scaling") == "true")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
