"""make gpu-check: its reading of real GPU results, and its dry run on the CPU."""

import json
from pathlib import Path

from noisylab import gpu_check

H200 = Path(__file__).resolve().parents[1] / "docs" / "gpu-check" / "2026-12-04-h200"


def test_the_goals_and_the_projection_read_a_real_gpu_run():
    """The bench.json of the first H200 run: each goal's ratio found and judged; the
    Co-teaching sweep projected from an epoch time."""
    bench = json.loads((H200 / "bench.json").read_text())
    goals = gpu_check.goals(bench)
    overhead = goals["overhead cnn9 batch 128 (noisylab / plain loop)"]
    assert abs(overhead["measured"] - 9.049109 / 7.897428) < 1e-6 and overhead["met"] is False
    fused = goals["fused two-network step (fused pair / one network)"]
    assert abs(fused["measured"] - bench["results"]["fused"]["cnn9"]["fused/single"]) < 1e-12
    meta = goals["meta step (look-ahead / plain step)"]["measured"]
    assert abs(meta - min(v for m in ("resnet32", "wrn28_10") for k, v in bench["results"]["meta"][m].items()
                          if k.endswith("/plain"))) < 1e-12
    bench["results"]["epoch"] = {"coteaching/cnn9": {"epoch_s": 7.2, "extrapolated": False, "mfu_vs_bf16": 0.08},
                                 "coteaching/cnn9@gpu": {"epoch_s": 9.0, "extrapolated": False}}
    throughput = json.loads((H200 / "throughput.json").read_text())
    projected = gpu_check.projection(bench, throughput)
    assert projected["epoch_case"] == "coteaching/cnn9"
    assert projected["one_at_a_time_hours"] == round(54 * 200 * 7.2 / 3600, 2)
    assert projected["jobs_per_device"] == 4 and projected["best_hours"] < projected["one_at_a_time_hours"]
    assert gpu_check.projection({"results": {}}, throughput) == {}


def test_junit_and_log_results(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text('<testsuites><testsuite><testcase name="a" time="1.5"/><testcase name="b" time="2">'
                   '<failure message="boom\nmore">x</failure></testcase><testcase name="c" time="0">'
                   '<skipped message="no"/></testcase></testsuite></testsuites>')
    got = gpu_check.junit_results(xml)
    assert {k: v["outcome"] for k, v in got.items()} == {"a": "passed", "b": "failed", "c": "skipped"}
    assert got["b"]["message"].startswith("boom")
    log = tmp_path / "log"
    log.write_text("[gw1] PASSED tests/test_gpu.py::test_x[ce-gpu] \n[gw0] FAILED tests/test_gpu.py::test_y \n")
    assert {k: v["outcome"] for k, v in gpu_check.log_results(log).items()} == {"test_x[ce-gpu]": "passed",
                                                                                  "test_y": "failed"}


def test_the_dry_run_runs_every_phase_on_the_cpu(tmp_path, monkeypatch):
    """The command a GPU machine runs, on the CPU: the device tests (three methods, an MLP),
    a cut bench, the JSON and the summary, labelled a dry run."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    report = gpu_check.main([str(tmp_path), "--dry-run", "--budget", "240"])
    assert report["dry_run"] and report["phases"]["tests"]["status"] == "passed", report["phases"]
    outcomes = [t["outcome"] for t in report["tests"].values()]
    assert outcomes and set(outcomes) == {"passed"} and len(outcomes) >= 7
    assert report["phases"]["bench"]["status"] == "passed"
    assert report["bench"]["results"]["overhead"][0]["model"] == "mlp"
    written = json.loads((tmp_path / "gpu_check.json").read_text())
    assert written["tests"] == report["tests"]
    assert "DRY RUN on the CPU" in (tmp_path / "gpu_check.md").read_text()
