"""DNN-RAB parts without training: configuration, noise, artefacts, votes, certificates."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from rab.bounds import ABSTAIN, certify_exact, certify_hard_votes, certify_soft_votes
from rab.ensemble.artifacts import (
    MemberArtifact,
    member_complete,
    model_path,
    open_directory,
    read_member,
    sidecar_path,
    write_member,
)
from rab.ensemble.certify import certify_votes, expected_certificates
from rab.ensemble.config import DP_PRESETS, DPConfig, EnsembleConfig, preset
from rab.ensemble.noise import (
    inference_noise,
    member_seeds,
    noise_seed_from_digest,
    training_noise,
)
from rab.ensemble.vote import VoteMatrices


def _config(**changes: object) -> EnsembleConfig:
    values: dict[str, object] = {"input_shape": (1, 28, 28), "num_classes": 2, "sigma": 1.0,
                                 "num_models": 10, "seed": 0}
    values.update(changes)
    return preset("mnist", **values)  # type: ignore[arg-type]


# ---------------------------------------------------------------- configuration


def test_presets_are_the_authors_settings() -> None:
    mnist, cifar = _config(), preset("cifar", seed=0, input_shape=(3, 32, 32), num_classes=2,
                                     sigma=1.0, num_models=5)
    assert (mnist.arch, mnist.epochs, mnist.batch_size, mnist.lr, mnist.optimizer) == \
        ("mnist_cnn", 20, 128, 1e-3, "adam")
    assert (cifar.arch, cifar.epochs, cifar.batch_size, cifar.lr) == ("preact_resnet", 10, 64, 1e-3)
    private = preset("cifar", seed=0, input_shape=(3, 32, 32), num_classes=2, sigma=1.0,
                     num_models=5, dp=True)
    assert private.dp == DPConfig(noise_multiplier=0.1, max_grad_norm=100.0)
    assert private.norm == "group"
    assert DP_PRESETS["mnist"] == DPConfig(noise_multiplier=4.0, max_grad_norm=5.0)


def test_config_round_trips_through_json() -> None:
    config = _config(dp=DP_PRESETS["mnist"], seed=7)
    again = EnsembleConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_member_fingerprint_ignores_n_but_not_training_settings() -> None:
    base = _config()
    assert _config(num_models=1000).member_fingerprint() == base.member_fingerprint()
    for other in (_config(sigma=2.0), _config(seed=1), _config(epochs=3)):
        assert other.member_fingerprint() != base.member_fingerprint()


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"sigma": -1.0}, "sigma"), ({"num_models": 0}, "num_models"), ({"lr": 0.0}, "lr"),
     ({"arch": "vgg"}, "arch"), ({"optimizer": "lbfgs"}, "optimizer"), ({"num_classes": 1},
     "num_classes")],
)
def test_invalid_config_raises(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**changes)


def test_numpy_scalars_become_plain_numbers() -> None:
    config = _config(num_classes=np.int64(2), sigma=np.float32(0.5), input_shape=(np.int64(1), 28,
                                                                                  28))
    assert type(config.num_classes) is int and type(config.sigma) is float
    assert config.member_fingerprint() == _config(sigma=0.5).member_fingerprint()
    with pytest.raises(ValueError, match="integer"):
        _config(num_models=2.5)


def test_dp_with_batchnorm_is_rejected() -> None:
    with pytest.raises(ValueError, match="norm='group'"):
        preset("cifar", seed=0, input_shape=(3, 32, 32), num_classes=2, sigma=1.0, num_models=1,
               dp=DP_PRESETS["cifar"], norm="batch")


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown"):
        EnsembleConfig.from_dict({**_config().to_dict(), "extra": 1})


# ---------------------------------------------------------------- noise


def test_training_noise_is_seeded_by_job_seed_and_model_index() -> None:
    shape = (50, 1, 4, 4)
    a = training_noise(member_seeds(3, 5), shape, 1.5)
    assert a.dtype == np.float32 and a.shape == shape
    np.testing.assert_array_equal(a, training_noise(member_seeds(3, 5), shape, 1.5))
    assert not np.array_equal(a, training_noise(member_seeds(3, 6), shape, 1.5))
    assert not np.array_equal(a, training_noise(member_seeds(4, 5), shape, 1.5))
    # one N(0, sigma^2) draw per coordinate: a Kolmogorov-Smirnov test at the 0.1 % level
    big = training_noise(member_seeds(0, 0), (4000, 5), 2.0).ravel()
    assert stats.kstest(big, stats.norm(scale=2.0).cdf).pvalue > 1e-3


def test_member_seeds_are_distinct_streams() -> None:
    s = member_seeds(0, 0)
    assert len({s.init, s.shuffle, s.dp}) == 3
    assert member_seeds(0, 1).init != s.init
    with pytest.raises(ValueError):
        member_seeds(-1, 0)


def test_test_noise_is_a_function_of_the_model_bytes_only() -> None:
    digest = hashlib.sha256(b"model bytes").digest()
    seed = noise_seed_from_digest(digest)
    assert seed == int.from_bytes(digest[:8], "little")
    assert seed == noise_seed_from_digest(digest.hex())
    u = inference_noise(seed, (1, 28, 28), 1.0)
    np.testing.assert_array_equal(u, inference_noise(seed, (1, 28, 28), 1.0))
    other = noise_seed_from_digest(hashlib.sha256(b"model bytez").digest())
    assert not np.array_equal(u, inference_noise(other, (1, 28, 28), 1.0))
    np.testing.assert_allclose(inference_noise(seed, (1, 28, 28), 0.5), 0.5 * u, rtol=1e-6)
    with pytest.raises(ValueError, match="32-byte"):
        noise_seed_from_digest(b"short")


# ---------------------------------------------------------------- artefacts


def test_artifact_write_read_and_verification(tmp_path: Path) -> None:
    artifact = MemberArtifact.from_bytes(3, b"weights", {"epochs": 1})
    assert artifact.sha256 == hashlib.sha256(b"weights").hexdigest()
    assert not member_complete(tmp_path, 3)
    write_member(tmp_path, artifact)
    assert member_complete(tmp_path, 3)
    assert read_member(tmp_path, 3) == artifact
    assert not list(tmp_path.glob("*.tmp"))
    model_path(tmp_path, 3).write_bytes(b"weightz")  # corrupted after the sidecar was written
    assert not member_complete(tmp_path, 3)
    with pytest.raises(ValueError, match="hash"):
        read_member(tmp_path, 3)
    model_path(tmp_path, 4).write_bytes(b"half-written")  # a model without sidecar
    assert not member_complete(tmp_path, 4)
    sidecar_path(tmp_path, 5).write_text("{not json")
    assert not member_complete(tmp_path, 5)


def test_artifact_rejects_a_seed_not_derived_from_its_hash() -> None:
    good = MemberArtifact.from_bytes(0, b"x", {})
    with pytest.raises(ValueError, match="noise seed"):
        MemberArtifact(0, b"x", good.sha256, good.noise_seed + 1, {})


def test_directory_refuses_another_configuration(tmp_path: Path) -> None:
    open_directory(tmp_path, _config(), "data-a")
    open_directory(tmp_path, _config(num_models=50), "data-a")  # growing N is fine
    with pytest.raises(ValueError, match="member_fingerprint"):
        open_directory(tmp_path, _config(sigma=2.0), "data-a")
    with pytest.raises(ValueError, match="data_sha256"):
        open_directory(tmp_path, _config(), "data-b")


# ---------------------------------------------------------------- votes and certificates


def _random_votes(num_models: int, m: int, num_classes: int, seed: int) -> VoteMatrices:
    rng = np.random.default_rng(seed)
    # each test point has its own class distribution, so some rows certify and some abstain
    logits = rng.normal(size=(1, m, num_classes)) * 3 + rng.normal(size=(num_models, m,
                                                                       num_classes))
    soft = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    return VoteMatrices(soft.argmax(axis=2).astype(np.int64), soft.astype(np.float32),
                        tuple(f"{k:064x}" for k in range(num_models)), sigma=0.5)


def test_counts_and_means_match_brute_force() -> None:
    votes = _random_votes(40, 30, 3, seed=0)
    counts = np.zeros((30, 3), dtype=np.int64)
    for k in range(40):
        for i in range(30):
            counts[i, votes.hard[k, i]] += 1
    np.testing.assert_array_equal(votes.counts(), counts)
    np.testing.assert_allclose(votes.mean_proba(), votes.soft.astype(np.float64).sum(0) / 40)


def test_vote_matrices_round_trip(tmp_path: Path) -> None:
    votes = _random_votes(7, 11, 2, seed=1)
    votes.save(tmp_path)
    again = VoteMatrices.load(tmp_path)
    np.testing.assert_array_equal(again.hard, votes.hard)
    np.testing.assert_array_equal(again.soft, votes.soft)
    assert (again.sha256, again.sigma) == (votes.sha256, votes.sigma)
    assert votes.first(3).num_models == 3
    with pytest.raises(ValueError):
        votes.first(8)


def test_vote_matrices_validate_shapes() -> None:
    votes = _random_votes(4, 5, 2, seed=2)
    with pytest.raises(ValueError, match="soft votes"):
        VoteMatrices(votes.hard, votes.soft[:, :4], votes.sha256, 0.5)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        VoteMatrices(votes.hard + 2, votes.soft, votes.sha256, 0.5)


@pytest.mark.parametrize("num_classes", [2, 4])
def test_certificates_are_rab_bounds_on_the_stored_votes(num_classes: int) -> None:
    votes = _random_votes(100, 60, num_classes, seed=num_classes)
    hard = certify_votes(votes, alpha=0.001)
    ref = certify_hard_votes(votes.counts(), sigma=0.5, alpha=0.001)
    np.testing.assert_array_equal(hard.prediction, ref.prediction)
    np.testing.assert_array_equal(hard.radius, ref.radius)
    assert hard.num_votes == 100
    soft = certify_votes(votes, alpha=0.001, votes="soft")
    ref = certify_soft_votes(votes.mean_proba(), num_models=100, sigma=0.5, alpha=0.001)
    np.testing.assert_array_equal(soft.prediction, ref.prediction)
    np.testing.assert_array_equal(soft.radius, ref.radius)
    assert (hard.prediction == ABSTAIN).any() and (hard.prediction != ABSTAIN).any()
    expected = expected_certificates(votes)
    shares = votes.counts() / 100
    np.testing.assert_array_equal(expected.radius, certify_exact(shares, sigma=0.5).radius)
    assert expected.alpha is None and expected.method == "point-estimate"


def test_unanimous_votes_give_the_clopper_pearson_limit() -> None:
    # With all N votes for one class the one-sided CP lower bound at level a is a^(1/N), pB =
    # 1 - pA (complement rule, a = alpha/2 for C = 2), so R = sigma * Phi^-1(pA).
    n, alpha, sigma = 100, 0.001, 1.0
    votes = VoteMatrices(np.zeros((n, 3), dtype=np.int64),
                         np.tile(np.array([1.0, 0.0], np.float32), (n, 3, 1)),
                         tuple("0" * 64 for _ in range(n)), sigma)
    cert = certify_votes(votes, alpha=alpha)
    np.testing.assert_allclose(cert.radius, sigma * stats.norm.ppf((alpha / 2) ** (1 / n)),
                               rtol=1e-9)
    assert np.isinf(expected_certificates(votes).radius).all()  # point estimate: not certified


def test_unknown_vote_kind_raises() -> None:
    with pytest.raises(ValueError, match="votes must be"):
        certify_votes(_random_votes(3, 2, 2, 0), alpha=0.01, votes="mean")  # type: ignore[arg-type]


def test_config_votes_and_certificates_do_not_import_torch() -> None:
    """The service's API process validates configurations and reads votes without torch."""
    code = ("import sys; from rab.ensemble import EnsembleConfig, VoteMatrices, certify_votes, "
            "inference_noise, MemberArtifact; sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
