import csv
import math

import pytest

from raysweep.frontier import Point, dominates, hypervolume, pareto_front, plot, write_csv


def P(name, r, f, noise="gaussian"):
    return Point(name, r, f, {"unlearn.noise": noise, "model.family": "mae"}, {"forget/is": 1.0})


def test_pareto_front_min_retain_max_forget():
    pts = [P("a", 10, 50), P("b", 12, 80), P("c", 11, 40), P("d", 15, 80), P("e", 9, 20)]
    front = pareto_front(pts)
    assert [p.trial for p in front] == ["e", "a", "b"]  # c dominated by a, d by b
    assert dominates(pts[0], pts[2]) and not dominates(pts[0], pts[1])


def test_ties_and_nans():
    pts = [P("a", 10, 50), P("b", 10, 50), P("n", float("nan"), 90), P("i", 5, math.inf), P("c", 11, 50)]
    front = pareto_front(pts)
    assert [p.trial for p in front] == ["a", "b"]  # exact ties both kept; NaN / inf left out
    assert pareto_front([]) == []


def test_hypervolume():
    front = [P("a", 1, 3), P("b", 2, 4)]
    # reference (retain 3, forget 1): [1,2)x(3-1) + [2,3)x(4-1) = 2 + 3
    assert hypervolume(front, 3, 1) == pytest.approx(5.0)
    assert hypervolume([P("x", 4, 5)], 3, 1) == 0.0


def test_csv_and_plot(tmp_path):
    pts = [P("a", 10, 50), P("b", 12, 80, "uniform"), P("c", 11, 40)]
    rows = list(csv.DictReader(open(write_csv(pts, tmp_path / "f.csv"))))
    assert {r["trial"]: r["on_front"] for r in rows} == {"a": "1", "b": "1", "c": "0"}
    assert rows[0]["unlearn.noise"] == "gaussian" and "forget/is" in rows[0]
    png = plot(pts, tmp_path / "f.png", original=(9.0, 20.0))
    assert png.read_bytes()[:4] == b"\x89PNG"
