"""benchmarks/gpu_check.py, the script a GPU machine runs, on this CPU: it runs end to end,
its CPU float64 reference agrees with itself, and it refuses CUDA where there is none."""

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import run_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def run(*args: str) -> int:
    return run_script(SCRIPT, *args)


def test_the_gpu_check_runs_on_a_cpu_and_writes_its_table(tmp_path, monkeypatch):
    from freecg_md import FreeCGCalculator

    # Every timed call must be a model evaluation, not a calculator's stored result.
    computed = []
    calculate = FreeCGCalculator.calculate

    def counted(self, *args, **kwargs):
        computed.append(self)
        return calculate(self, *args, **kwargs)

    monkeypatch.setattr(FreeCGCalculator, "calculate", counted)
    out = tmp_path / "check"
    assert run("--device", "cpu", "--replicas", "1", "--steps", "2", "--warmup", "2",
               "--calls", "1", "--geometries", "2", "--quick", "--out", out) == 0
    # Correctness: the float64 reference and three variants on 2 geometries; one call: 3
    # warm-up and 1 timed geometry for each of the two precisions.
    assert len(computed) == 4 * 2 + 2 * (3 + 1)
    report = json.loads((out / "gpu_check.json").read_text())
    float64 = next(r for r in report["correctness"] if r["dtype"] == "float64")
    assert float64["max_force_diff_eV_A"] < 1e-10  # the same computation as the reference
    float32 = next(r for r in report["correctness"] if r["dtype"] == "float32")
    assert 0 < float32["max_force_diff_eV_A"] < 1e-2
    # The TF32 row (a CPU has no TF32: float32 products) is measured too, and torch's
    # global matrix-product settings are untouched.
    tf32 = next(r for r in report["correctness"] if r["dtype"] == "float32 + TF32")
    assert 0 < tf32["max_force_diff_eV_A"] < 1e-2
    assert report["one_call"]["tf32_median_ms"] > 0
    assert torch.get_float32_matmul_precision() == "highest"
    assert torch.backends.mkldnn.matmul.fp32_precision == "none"
    (row,) = report["md"]
    assert "error" not in row and row["replicas"] == 1 and row["ns_per_day_per_replica"] > 0
    table = (out / "gpu_check.md").read_text()
    assert "| 1 | False |" in table and "One calculator call" in table
    assert "| float32 + TF32 |" in table and "with TF32 matrix products" in table


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_the_gpu_check_refuses_cuda_without_a_gpu(tmp_path, capsys):
    assert run("--out", tmp_path) == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err
