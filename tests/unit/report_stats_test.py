#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# benchmarks/report.py's paired estimates: per-round ratios and the distribution-free interval of their median.
# Pure functions on made-up runs (below the socket: no server, no benchmark run).
import importlib.util
import sys
import unittest
from pathlib import Path

REPORT = Path(__file__).resolve().parents[2] / "benchmarks" / "report.py"
spec = importlib.util.spec_from_file_location("report", REPORT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def run(case, server, rnd, cpu, ok=True):
    """A run as benchmarks/run writes it, with only what the report reads."""
    result = {
        "ok": ok,
        "datagrams_per_s": 1000.0,
        "server_cpu_ns_per_datagram": cpu,
        "latency_us": {"p50": 10.0, "p99": 20.0, "p999": 30.0},
    }
    return {"case": case, "server": server, "round": rnd, "bench_exit": 0, "server_exit": 0, "result": result}


def labelled(runs, case_label="case c"):
    """The runs with the labels the report prints: the case's, and each server's id as its label."""
    for r in runs:
        r["case_label"], r["server_label"] = case_label, r["server"]
    return runs


class MedianInterval(unittest.TestCase):
    def test_fifteen_values_give_the_4th_and_12th_order_statistics(self):
        values = [float(v) for v in range(15, 0, -1)]  # unsorted on purpose
        low, high, coverage = report.median_interval(values)
        self.assertEqual((low, high), (4.0, 12.0))
        self.assertAlmostEqual(coverage, 1 - 2 * (1 + 15 + 105 + 455) / 2**15)
        self.assertGreaterEqual(coverage, 0.95)

    def test_five_values_are_too_few_for_95_percent(self):
        self.assertIsNone(report.median_interval([1.0, 2.0, 3.0, 4.0, 5.0]))

    def test_six_values_give_the_extremes(self):
        low, high, coverage = report.median_interval([6.0, 1.0, 5.0, 2.0, 4.0, 3.0])
        self.assertEqual((low, high), (1.0, 6.0))
        self.assertAlmostEqual(coverage, 1 - 2 / 64)


class PairedRatios(unittest.TestCase):
    def test_each_round_is_compared_with_the_same_round_only(self):
        # The machine is twice as fast in round 2: the medians' ratio would mix the rounds, the pairs do not.
        runs = [
            run("c", "baseline", 1, 100.0), run("c", "io_uring", 1, 110.0),
            run("c", "baseline", 2, 50.0), run("c", "io_uring", 2, 55.0),
            run("other", "baseline", 1, 1.0),
        ]
        ratios = report.paired_ratios(runs, "c", "io_uring", "baseline", "cpu_ns_per_datagram")
        self.assertEqual([round(r, 6) for r in ratios], [1.1, 1.1])

    def test_failed_runs_and_rounds_without_a_reference_are_left_out(self):
        runs = [
            run("c", "baseline", 1, 100.0), run("c", "io_uring", 1, 120.0),
            run("c", "baseline", 2, 100.0, ok=False), run("c", "io_uring", 2, 999.0),
            run("c", "io_uring", 3, 999.0),
        ]
        self.assertEqual(report.paired_ratios(runs, "c", "io_uring", "baseline", "cpu_ns_per_datagram"), [1.2])


class PairedNote(unittest.TestCase):
    def runs_with(self, ratios):
        runs = []
        for rnd, ratio in enumerate(ratios, 1):
            runs += [run("c", "baseline", rnd, 1000.0), run("c", "io_uring", rnd, 1000.0 * ratio)]
        return runs

    def note(self, ratios, limit=1.00, kind="max"):
        return report.paired_note(self.runs_with(ratios), "c", "io_uring", "baseline", "cpu_ns_per_datagram",
                                  limit, kind)

    def test_an_interval_below_a_maximum_is_met(self):
        self.assertTrue(self.note([0.90 + 0.001 * i for i in range(15)]).endswith(": met"))

    def test_an_interval_above_a_maximum_is_missed(self):
        self.assertTrue(self.note([1.05 + 0.001 * i for i in range(15)]).endswith(": missed"))

    def test_an_interval_across_the_limit_is_undecided(self):
        text = self.note([0.95 + 0.01 * i for i in range(15)])  # 4th 0.98, 12th 1.06
        self.assertIn("interval 0.98–1.06×", text)
        self.assertTrue(text.endswith(": undecided"))

    def test_a_minimum_reads_the_other_way(self):
        self.assertTrue(self.note([1.05 + 0.001 * i for i in range(15)], kind="min").endswith(": met"))

    def test_few_rounds_give_the_median_without_a_verdict(self):
        text = self.note([1.1, 1.2, 1.3])
        self.assertIn("1.20×", text)
        self.assertIn("too few for an interval", text)


class TwinAB(unittest.TestCase):
    """The A/B section: a twin (`<id>@<tag>`, from --twin-args or --compare) against its untagged server."""

    def runs_with(self, ratios, twin="io_uring@args"):
        runs = []
        for rnd, ratio in enumerate(ratios, 1):
            runs += [run("c", "baseline", rnd, 1000.0), run("c", "io_uring", rnd, 2000.0),
                     run("c", twin, rnd, 2000.0 * ratio)]
        for r in runs:
            r["case_label"] = "case c"
            r["server_label"] = {"io_uring": "io_uring", "baseline": "baseline"}.get(r["server"], "io_uring [twin]")
        return runs

    def section(self, runs):
        return "\n".join(report.ab_lines(report.aggregate(runs), runs))

    def test_a_twin_cheaper_in_every_round_is_called_lower(self):
        text = self.section(self.runs_with([0.90 + 0.002 * i for i in range(15)]))
        self.assertIn("io_uring [twin] against io_uring: CPU per datagram 0.91×", text)
        self.assertIn("over 15 rounds: lower", text)

    def test_a_twin_on_both_sides_of_its_server_is_no_difference(self):
        text = self.section(self.runs_with([0.95 + 0.01 * i for i in range(15)]))  # 4th 0.98, 12th 1.06
        self.assertIn("CPU per datagram 1.02×, 96 % interval 0.98–1.06× over 15 rounds: no difference resolved", text)

    def test_the_ratio_is_against_the_untagged_server_not_the_baseline(self):
        # The twin costs 1.6× the baseline but 0.80× its own server: the A/B says 0.80×.
        text = self.section(self.runs_with([0.80] * 8))
        self.assertIn("CPU per datagram 0.80×", text)

    def test_few_rounds_give_the_median_without_a_verdict(self):
        text = self.section(self.runs_with([0.9, 1.0, 1.1]))
        self.assertIn("1.00× over 3 rounds: too few rounds for an interval", text)

    def test_no_twin_no_section(self):
        runs = labelled([run("c", "baseline", 1, 1.0), run("c", "io_uring", 1, 1.0)])
        self.assertEqual(report.ab_lines(report.aggregate(runs), runs), [])


class PostTargets(unittest.TestCase):
    """unixgram-echo --post (io_uring-post, epoll-post) gets the CPU targets where it ran, and no line elsewhere."""

    def text(self, servers):
        runs = labelled([run("16x32-64B", s, rnd, 1000.0) for rnd in range(1, 4) for s in servers], "16 × 32")
        return report.markdown(report.aggregate(runs), {}, {}, runs)

    def test_the_post_servers_are_held_to_their_backends_targets(self):
        text = self.text(["baseline", "io_uring", "epoll", "io_uring-post", "epoll-post"])
        self.assertIn("- 16x32-64B, io_uring-post: cpu_ns_per_datagram ≤ 1.00× the baseline", text)
        self.assertIn("- 16x32-64B, epoll-post: cpu_ns_per_datagram ≤ 1.10× the baseline", text)
        self.assertIn("- 16x32-64B, io_uring-post: datagrams_per_s ≥ 1.00× the baseline", text)

    def test_no_post_server_no_post_target(self):
        text = self.text(["baseline", "io_uring", "epoll"])
        self.assertIn("- 16x32-64B, io_uring: cpu_ns_per_datagram ≤ 1.00× the baseline", text)
        self.assertNotIn("-post", text)


class Profile(unittest.TestCase):
    """benchmarks/run --profile: the kernel's share of perf's samples, and the report's split of CPU per datagram."""

    PERF_REPORT = (
        "    90.74%  [kernel.kallsyms]  \n"
        "     7.11%  unixgram-echo      \n"
        "     1.57%  libc.so.6          \n"
        "     0.58%  [vdso]             \n"
    )

    def test_the_kernel_share_counts_only_the_kernels_samples(self):
        self.assertAlmostEqual(report.kernel_share(self.PERF_REPORT), 0.9074)

    def test_a_guest_kernel_counts_as_the_kernel_and_headers_are_skipped(self):
        text = "# Overhead  Shared Object\n#\n    60.00%  [kernel.vmlinux]\n    20.00%  a.out\n"
        self.assertAlmostEqual(report.kernel_share(text), 0.75)

    def test_no_samples_no_share(self):
        self.assertIsNone(report.kernel_share(""))
        self.assertIsNone(report.kernel_share("Error:\nThe perf.data data has no samples!\n"))

    def runs_with(self, rounds):
        """Per round: (baseline CPU, baseline kernel share, io_uring CPU, io_uring kernel share)."""
        runs = []
        for rnd, (bcpu, bshare, ucpu, ushare) in enumerate(rounds, 1):
            runs += [dict(run("c", "baseline", rnd, bcpu), kernel_share=bshare),
                     dict(run("c", "io_uring", rnd, ucpu), kernel_share=ushare)]
        return labelled(runs)

    def test_the_split_of_cpu_per_datagram_and_its_ratios(self):
        runs = self.runs_with([(4000.0, 0.99, 4400.0, 0.90)] * 3)
        text = "\n".join(report.profile_lines(report.aggregate(runs), runs))
        self.assertIn("| baseline | 4,000 | 3,960 | 40 | 99.0 % |", text)
        self.assertIn("| io_uring | 4,400 (1.10×) | 3,960 (1.00×) | 440 (11.00×) | 90.0 % |", text)
        # user space above the baseline's: (440 - 40) / 4000 = 10 % of the baseline's CPU
        self.assertIn("io_uring: kernel 1.00× (3 rounds, too few for an interval) the baseline's; user space above "
                      "the baseline's, in % of the baseline's CPU per datagram: 10.0 % (3 rounds, too few for an "
                      "interval)", text)

    def test_paired_by_round_with_an_interval(self):
        rounds = [(4000.0, 1.0, 4000.0 * (1.05 + 0.01 * i), 0.9) for i in range(15)]
        runs = self.runs_with(rounds)
        text = "\n".join(report.profile_lines(report.aggregate(runs), runs))
        # kernel: 0.9 × (1.05 .. 1.19): median 0.9 × 1.12 = 1.008, 4th 0.9 × 1.08 = 0.972, 12th 0.9 × 1.16 = 1.044;
        # user space: 0.1 × (1.05 .. 1.19) of the baseline's CPU, whose user space is 0: median 11.2 %
        self.assertIn("kernel 1.01× (96 % interval 0.97–1.04×, 15 rounds) the baseline's", text)
        self.assertIn("CPU per datagram: 11.2 % (96 % interval 10.8–11.6 %, 15 rounds)", text)

    def test_runs_without_a_profile_add_no_section(self):
        runs = labelled([run("c", "baseline", 1, 1.0), run("c", "io_uring", 1, 1.0)])
        self.assertEqual(report.profile_lines(report.aggregate(runs), runs), [])
        self.assertNotIn("Where the CPU goes", report.markdown(report.aggregate(runs), {}, {}, runs))


class FmtRatio(unittest.TestCase):
    def test_two_decimals_as_a_rule(self):
        self.assertEqual(report.fmt_ratio(1.0949, 1.00), "1.09×")

    def test_a_third_where_two_would_print_the_limit_for_a_value_beside_it(self):
        self.assertEqual(report.fmt_ratio(0.7978, 0.80), "0.798×")
        self.assertEqual(report.fmt_ratio(1.004, 1.00), "1.004×")

    def test_the_limit_itself_keeps_two(self):
        self.assertEqual(report.fmt_ratio(0.80, 0.80), "0.80×")

    def test_an_interval_bound_next_to_the_limit_is_not_shown_as_the_limit(self):
        text = PairedNote.note(PairedNote(), [1.001 + 0.01 * i for i in range(15)])  # 4th 1.031, lowest 1.001
        self.assertIn("interval 1.03–1.11×", text)
        text = PairedNote.note(PairedNote(), [0.9705 + 0.01 * i for i in range(15)])  # 4th 1.0005
        self.assertIn("interval 1.000–1.08×", text)
        self.assertTrue(text.endswith(": missed"))


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0]] + sys.argv[1:], verbosity=2)
