"""Tests of the noise statistics: `python3 -m unittest discover -s scripts/compare_lib`."""

import math
import unittest

import stats


def runs(values, field="throughput_rps"):
    return [{field: v} for v in values]


class Interval(unittest.TestCase):
    def test_geometric_mean_and_t_interval(self):
        ratio, lo, hi = stats.interval([1.0, 1.21])
        self.assertAlmostEqual(ratio, 1.1)
        # exp(mean ± 12.706 · sd / √2) over log 1 and log 1.21.
        half = 12.706 * math.log(1.21) / math.sqrt(2) / math.sqrt(2)
        self.assertAlmostEqual(lo, 1.1 * math.exp(-half))
        self.assertAlmostEqual(hi, 1.1 * math.exp(half))

    def test_symmetric_in_a_and_b(self):
        a, b = [100, 110, 95, 120, 105], [90, 100, 96, 100, 99]
        r1 = stats.compare("a", runs(a), "b", runs(b), "throughput_rps")
        r2 = stats.compare("b", runs(b), "a", runs(a), "throughput_rps")
        self.assertAlmostEqual(r1["ratio"], 1 / r2["ratio"])
        self.assertAlmostEqual(r1["ci95"][0], 1 / r2["ci95"][1])

    def test_one_round_has_no_interval(self):
        c = stats.compare("a", runs([2.0]), "b", runs([1.0]), "throughput_rps")
        self.assertEqual(c["ratio"], 2.0)
        self.assertIsNone(c["ci95"])
        self.assertTrue(c["verdict"].startswith("no verdict"))

    def test_rounds_with_a_missing_or_zero_figure_are_left_out(self):
        c = stats.compare("a", runs([2.0, 0.0, 2.0, None]), "b", runs([1.0, 1.0, 1.0, 1.0]), "throughput_rps")
        self.assertEqual(c["rounds"], 2)


class Verdicts(unittest.TestCase):
    def test_consistent_difference_is_a_verdict(self):
        c = stats.compare("a", runs([110, 111, 109, 112, 110]), "b", runs([100, 100, 99, 101, 100]),
                          "throughput_rps")
        self.assertEqual(c["verdict"], "faster")
        c = stats.compare("a", runs([3.0, 3.1, 2.9], "server_us_per_request"), "b",
                          runs([4.0, 4.0, 4.1], "server_us_per_request"), "server_us_per_request")
        self.assertEqual(c["verdict"], "less CPU")

    def test_noisy_difference_is_a_tie(self):
        c = stats.compare("a", runs([130, 95, 120, 90, 110]), "b", runs([100, 100, 100, 100, 100]),
                          "throughput_rps")
        self.assertEqual(c["verdict"], "tie within noise")

    def test_two_rounds_never_give_a_verdict(self):
        c = stats.compare("a", runs([200, 200.1]), "b", runs([100, 100]), "throughput_rps")
        self.assertTrue(c["verdict"].startswith("no verdict"))


class Targets(unittest.TestCase):
    def test_met_only_when_the_interval_clears_the_bound(self):
        self.assertEqual(stats.target_status("<=", 0.7, 0.6, 0.69, 5), "met")
        self.assertTrue(stats.target_status("<=", 0.7, 0.6, 0.71, 5).startswith("undecided"))
        self.assertEqual(stats.target_status("<=", 0.7, 0.71, 0.8, 5), "missed")
        self.assertEqual(stats.target_status(">=", 1.1, 1.12, 1.3, 7), "met")
        self.assertEqual(stats.target_status(">=", 1.1, 0.9, 1.05, 7), "missed")

    def test_too_few_rounds_decide_nothing(self):
        self.assertTrue(stats.target_status("<=", 0.7, 0.6, 0.65, 4).startswith("undecided"))


class Formatting(unittest.TestCase):
    def test_extremes_carry_no_false_precision(self):
        self.assertEqual(stats.num(0.001), "<0.01")
        self.assertEqual(stats.num(3031.4), ">100")
        self.assertEqual(stats.num(1.094), "1.09")


if __name__ == "__main__":
    unittest.main()
