"""No personal data: DICOMs carrying PatientName, PatientBirthDate and PatientID go through the
real download/convert/split/balance stages, and none of those values appears under data/ or results/
(the converted raw copy of the DICOMs in data/raw excepted: it is the user's input as it ships)."""

import pydicom

from tests.conftest import make_workdir, stage


def test_no_patient_identifiers_in_outputs(tmp_path):
    work = make_workdir(tmp_path, {"dataset.name": "phantom_siim", "dataset.phantom.cases": 12})
    for module in ("stages.download", "stages.convert", "stages.split", "stages.balance"):
        result = stage(work, module)
        assert result.returncode == 0, result.stderr[-2000:]
    secrets: set[str] = set()
    for dcm in (work / "data/raw").rglob("*.dcm"):
        ds = pydicom.dcmread(dcm, stop_before_pixels=True)
        secrets |= {str(ds.PatientName), str(ds.PatientID), str(ds.PatientBirthDate)}
    assert len(secrets) >= 10  # the phantom really carries identifiers
    written = [p for p in (work / "data").rglob("*") if p.is_file() and "raw" not in p.relative_to(work / "data").parts[:1]]
    written += [p for p in (work / "results").rglob("*") if p.is_file()]
    assert any(p.name == "manifest.csv" for p in written)
    for path in written:
        content = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in content, f"{secret} leaked into {path}"
