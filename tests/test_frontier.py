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


def test_several_studies_share_one_figure_and_one_umbrella_run(tmp_path):
    from mlflow.tracking import MlflowClient

    from raysweep.frontier import Point, plot_fronts
    from raysweep.tracking import umbrella_run

    def pts(scale):
        extra = {"original/retain/fid": 2.0 * scale, "original/forget/fid": 1.0 * scale}
        return [Point(f"t{i}", (2.0 + i) * scale, (1.0 + 2 * i) * scale, {}, extra) for i in range(3)]

    fig = plot_fronts({"mae": pts(1.0), "palette": pts(30.0)}, tmp_path / "fronts.png")
    assert fig.stat().st_size > 0
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("x")
    parents = [client.create_run(exp).info.run_id for _ in range(2)]
    rid = umbrella_run(uri, "x", parents, [fig])
    assert all(client.get_run(p).data.tags["mlflow.parentRunId"] == rid for p in parents)
    assert [a.path for a in client.list_artifacts(rid)] == ["fronts.png"]
