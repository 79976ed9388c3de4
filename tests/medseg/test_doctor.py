"""`python -m medseg.doctor` runs on a CPU-only machine and reports what it promises."""
import os
import re
import subprocess
import sys

from tests.conftest import REPO


def test_doctor_reports_versions_devices_auto_choice_backends_and_a_benchmark():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", "medseg.doctor", "--seconds", "0.2"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    fields = dict(re.findall(r"^([^:\n]+):\s+(.*)$", out, flags=re.M))
    import torch

    assert fields["torch"] == torch.__version__ and re.fullmatch(r"\d+\.\d+\.\d+", fields["dvc"])
    assert "cuda (torch build)" in fields and "cudnn" in fields
    assert re.search(r"\d+ logical cores .* [\d.]+ GiB RAM, native bf16: (yes|no)$", fields["cpu"])
    assert fields["gpu"] == "none visible to torch"
    assert fields["train.device auto picks"].startswith("cpu")
    assert fields["train.amp auto picks"] == ("bfloat16" if "native bf16: yes" in fields["cpu"] else "fp32")
    assert "gloo: yes" in fields["ddp backends"]
    native = "native bf16: yes" in fields["cpu"]
    for dtype in ("fp32", "bfloat16") if native else ("fp32",):
        ms, per_s, steps = re.fullmatch(r"([\d.]+) ms/step, ([\d.]+) images/s \((\d+) steps\)",
                                        fields[f"bench {dtype}"]).groups()
        assert float(ms) > 0 and float(per_s) > 0 and int(steps) >= 3
        assert abs(float(per_s) - 8 * 1000 / float(ms)) < 0.02 * float(per_s)  # batch 8: the two figures agree
    if native:
        assert re.match(r"[\d.]+x over fp32", fields["bf16 speed-up"])
    else:  # emulated bf16 is never timed (10-40x slower): the doctor stays a few seconds on any CPU
        assert fields["bench bfloat16"].startswith("not run: bf16 is emulated here") and "bf16 speed-up" not in fields
