"""``rab certify`` / ``rab demo-local`` end to end through typer's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rab.cli import local
from rab.evaluation import AttackSpec, DatasetSpec, KnnMethod, load_dataset, prepare
from rab.knn import certify_knn


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    application = typer.Typer()
    local.register(application)
    return application


def _invoke(app, args):
    return CliRunner().invoke(app, args)


SMALL = ["certify", "digits", "--classes", "0,1", "--train-size", "100", "--test-size", "30",
         "--sigma", "0.5"]


def test_certify_writes_json_consistent_with_its_certificates(app, tmp_path):
    out = tmp_path / "run"
    result = _invoke(app, [*SMALL, "--attack", "blending", "--norm", "1.0", "--rate", "0.1",
                           "--sigma", "0.5", "--k", "3", "--radii", "0,0.1,0.3",
                           "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "result.json").read_text())
    png = (out / "certified_accuracy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert record["radii"] == [0.0, 0.1, 0.3]
    assert record["attack"]["kind"] == "blending" and record["method"]["k"] == 3
    for subset in ("clean", "backdoor"):
        cert = record["certificates"][subset]
        pred, lab, rad = (np.array(cert[k]) for k in ("prediction", "label", "radius"))
        metrics = record["metrics"][subset]
        assert metrics["accuracy"] == pytest.approx(np.mean(pred == lab))
        for r in record["radii"]:
            assert metrics["certified_accuracy"][f"{r:g}"] == pytest.approx(
                np.mean((pred == lab) & (rad > r)))
            assert metrics["certified_rate"][f"{r:g}"] == pytest.approx(np.mean(rad > r))
    asr = np.mean(np.array(record["certificates"]["backdoor"]["prediction"])
                  == np.array(record["certificates"]["backdoor"]["attack_label"]))
    assert record["metrics"]["attack_success_rate"] == pytest.approx(asr)
    assert set(record["vanilla"]) == {"clean", "backdoor"}
    # the certificates themselves, recomputed from the same data, attack and K-NN
    data = load_dataset(DatasetSpec("digits", classes=(0, 1), train_size=100, test_size=30))
    assert record["attack"]["seed"] is not None  # drawn fresh, recorded
    ev = prepare(data, AttackSpec.from_dict(record["attack"]))
    direct = certify_knn(ev.train.X_train, ev.train.y_train, ev.test("backdoor").X, sigma=0.5,
                         k=3, num_classes=2, backend="numpy")
    np.testing.assert_allclose(record["certificates"]["backdoor"]["radius"], direct.radius,
                               rtol=1e-9, atol=1e-12)
    assert "RAB" in result.output and "vanilla" in result.output


def test_certify_without_attack(app, tmp_path):
    result = _invoke(app, [*SMALL, "--sigma", "1.0", "--no-vanilla", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["attack"] is None and record["vanilla"] is None
    assert list(record["certificates"]) == ["clean"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["certify", "no-such-dataset", "--sigma", "1"], "unknown data set"),
        (["certify", "/nonexistent/data.npz", "--sigma", "1"], "not found"),
        (["certify", "digits"], "--sigma"),
        ([*SMALL, "--sigma", "0"], "sigma"),
        ([*SMALL, "--sigma", "-1"], "sigma"),
        ([*SMALL, "--method", "svm"], "unknown method"),
        ([*SMALL, "--attack", "laser"], "unknown attack kind"),
        ([*SMALL, "--attack", "blending", "--norm", "-1"], "norm"),
        ([*SMALL, "--attack", "blending", "--rate", "1.5"], "rate"),
        ([*SMALL, "--attack", "blending", "--target", "5"], "target class 5 is outside"),
        (["certify", "digits", "--classes", "0,42", "--sigma", "1"], "outside"),
        ([*SMALL, "--radii", "a,b"], "radii"),
        ([*SMALL, "--k", "0"], "k must"),
        (["certify", "digits", "--variant", "other", "--sigma", "1"], "variant"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(app, tmp_path, args, message):
    result = _invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "result.json").exists()


def test_demo_local_knn_part(app, tmp_path, monkeypatch):
    """The demo's fixed K-NN run (the ensemble half is exercised by test_evaluation)."""
    monkeypatch.setattr(local, "DEMO_METHODS", (KnnMethod(sigma=0.5, k=5),))
    result = _invoke(app, ["demo-local", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "knn" / "result.json").read_text())
    assert record["dataset"]["class_names"] == ["0", "1"]
    assert record["attack"] == local.DEMO_ATTACK.to_dict()
    assert (tmp_path / "knn" / "certified_accuracy.png").is_file()
