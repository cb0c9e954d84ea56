"""DNN-RAB end to end on real MNIST 0/1: train, vote, certify, reproduce, resume, DP-SGD.

Cheap on purpose (2 shared CPU cores): 2,000 training points, 1 epoch at batch size 32 (the
authors' 128 takes only 16 steps per epoch here), 20 models, 200 test points.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from opacus.accountants import RDPAccountant
from scipy import stats

from rab.bounds import ABSTAIN, certify_hard_votes, certify_soft_votes
from rab.ensemble.artifacts import MemberArtifact, model_path, read_member, sidecar_path
from rab.ensemble.certify import certify_votes
from rab.ensemble.config import EnsembleConfig, preset
from rab.ensemble.noise import member_seeds
from rab.ensemble.predict import Member, iter_members, load_member, predict_votes
from rab.ensemble.stacked import StackedMembers, stack_members, stacked_votes
from rab.ensemble.train import (
    initial_model,
    models_per_chunk,
    serialize_state_dict,
    train_ensemble,
    train_member,
    train_members_batched,
)
from rab.ensemble.vote import VoteMatrices
from rab.nets import build_model

pytestmark = pytest.mark.slow  # trains about 40 small models: 20-60 s on 2 shared cores

SIGMA = 1.0
ALPHA = 0.01


@pytest.fixture(scope="module")
def mnist(shared_data: Path) -> dict[str, np.ndarray]:
    """A seeded 2,000-point training subset and the first 200 test points, pixels in [0, 1]."""
    with np.load(shared_data / "mnist_01.npz", allow_pickle=False) as d:
        pick = np.random.default_rng(0).permutation(len(d["y_train"]))[:2000]
        return {
            "X": (d["X_train"][pick].astype(np.float32) / 255)[:, None],
            "y": d["y_train"][pick].astype(np.int64),
            "X_test": (d["X_test"][:200].astype(np.float32) / 255)[:, None],
            "y_test": d["y_test"][:200].astype(np.int64),
        }


def _config(num_models: int, **changes: object) -> EnsembleConfig:
    values: dict[str, object] = {"input_shape": (1, 28, 28), "num_classes": 2, "sigma": SIGMA,
                                 "num_models": num_models, "epochs": 1, "batch_size": 32,
                                 "seed": 0}
    return preset("mnist", **{**values, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def ensemble(mnist: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ensemble")
    seen: list[tuple[int, int]] = []
    train_ensemble(_config(20), mnist["X"], mnist["y"], out, progress=lambda *a: seen.append(a))
    assert seen == [(k, 20) for k in range(21)]
    return out


@pytest.fixture(scope="module")
def votes(ensemble: Path, mnist: dict[str, np.ndarray]) -> VoteMatrices:
    return predict_votes(iter_members(ensemble), mnist["X_test"], _config(20))


def test_accuracy_and_nontrivial_certified_radii(votes: VoteMatrices, mnist: dict) -> None:
    y = mnist["y_test"]
    cert = certify_votes(votes, alpha=ALPHA)
    assert np.mean(cert.prediction == y) >= 0.98
    # N = 20 unanimous votes: CP lower bound (alpha/2)^(1/N), radius sigma * Phi^-1 of it
    limit = SIGMA * stats.norm.ppf((ALPHA / 2) ** (1 / 20))
    unanimous = votes.counts().max(axis=1) == 20
    assert unanimous.mean() >= 0.5
    np.testing.assert_allclose(cert.radius[unanimous], limit, rtol=1e-9)
    assert np.all(cert.radius <= limit)
    assert np.mean((cert.prediction == y) & (cert.radius > 0.2)) >= 0.8
    assert np.all(cert.radius[cert.prediction == ABSTAIN] == 0)
    np.testing.assert_allclose(cert.per_sample_radius(4), cert.radius / 2)


def test_certificates_agree_with_rab_bounds(votes: VoteMatrices, mnist: dict,
                                            tmp_path: Path) -> None:
    votes.save(tmp_path)
    votes = VoteMatrices.load(tmp_path)  # certificates are recomputed from the stored votes
    counts = np.stack([np.bincount(votes.hard[:, i], minlength=2) for i in range(200)])
    hard = certify_votes(votes, alpha=ALPHA)
    ref = certify_hard_votes(counts, sigma=SIGMA, alpha=ALPHA)
    np.testing.assert_array_equal(hard.prediction, ref.prediction)
    np.testing.assert_array_equal(hard.radius, ref.radius)
    soft = certify_votes(votes, alpha=ALPHA, votes="soft")
    ref = certify_soft_votes(votes.soft.mean(axis=0, dtype=np.float64), num_models=20,
                             sigma=SIGMA, alpha=ALPHA)
    np.testing.assert_array_equal(soft.prediction, ref.prediction)
    np.testing.assert_array_equal(soft.radius, ref.radius)
    # Hoeffding at N = 20 is wide (eps = sqrt(ln(2 / alpha) / 40) = 0.36): more rows abstain
    assert np.mean(soft.prediction == mnist["y_test"]) >= 0.9


def test_votes_use_noise_seeded_by_the_file_hash(ensemble: Path, votes: VoteMatrices,
                                                mnist: dict) -> None:
    """Recompute model 3's votes from its file alone, deriving u_3 independently."""
    raw = model_path(ensemble, 3).read_bytes()
    digest = hashlib.sha256(raw).digest()
    assert votes.sha256[3] == digest.hex()
    seed = int.from_bytes(digest[:8], "little")
    u = np.random.default_rng(seed).standard_normal((1, 28, 28), dtype=np.float32) * SIGMA
    model = build_model("mnist_cnn", (1, 28, 28), 2)
    model.load_state_dict(torch.load(io.BytesIO(raw), weights_only=True))
    with torch.no_grad():
        z = model.eval()(torch.from_numpy(mnist["X_test"] + u)).reshape(-1)
    np.testing.assert_array_equal(votes.hard[3], (z > 0).long().numpy())
    np.testing.assert_allclose(votes.soft[3, :, 1], torch.sigmoid(z).numpy(), rtol=1e-6)
    assert read_member(ensemble, 3).noise_seed == seed


def test_reloading_reproduces_votes_exactly(ensemble: Path, votes: VoteMatrices,
                                            mnist: dict) -> None:
    again = predict_votes(iter_members(ensemble), mnist["X_test"], _config(20))
    np.testing.assert_array_equal(again.hard, votes.hard)
    np.testing.assert_array_equal(again.soft, votes.soft)
    assert len(set(votes.sha256)) == 20  # different models, different hashes and noise
    # another evaluation batch size may pick other conv kernels: equal up to float rounding
    rebatched = predict_votes(iter_members(ensemble), mnist["X_test"], _config(20), batch_size=37)
    np.testing.assert_allclose(rebatched.soft, votes.soft, atol=1e-6)


def test_a_model_retrained_alone_is_bit_identical(ensemble: Path, mnist: dict) -> None:
    artifact = train_member(_config(20), mnist["X"], mnist["y"], 7)
    assert artifact.state_dict_bytes == model_path(ensemble, 7).read_bytes()
    assert artifact.sha256 == read_member(ensemble, 7).sha256


def test_resume_after_a_crash_trains_only_the_missing_models(mnist: dict, tmp_path: Path) -> None:
    X, y = mnist["X"][:300], mnist["y"][:300]
    config = _config(5)

    def crash_after_three(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        train_ensemble(config, X, y, tmp_path, progress=crash_after_three)
    finished = {k: model_path(tmp_path, k).stat().st_mtime_ns for k in range(3)}
    assert not model_path(tmp_path, 3).exists()
    model_path(tmp_path, 3).write_bytes(b"half-written model, no sidecar")
    seen: list[int] = []
    train_ensemble(config, X, y, tmp_path, progress=lambda done, total: seen.append(done))
    assert seen == [3, 4, 5]  # models 3 and 4 trained, 0-2 skipped
    assert {k: model_path(tmp_path, k).stat().st_mtime_ns for k in range(3)} == finished
    assert read_member(tmp_path, 3).state_dict_bytes == \
        train_member(config, X, y, 3).state_dict_bytes
    # growing N keeps the first five; another sigma is refused
    seen.clear()
    train_ensemble(_config(6), X, y, tmp_path, progress=lambda done, total: seen.append(done))
    assert seen == [5, 6]
    with pytest.raises(ValueError, match="member_fingerprint"):
        train_ensemble(_config(6, sigma=2.0), X, y, tmp_path)
    assert sidecar_path(tmp_path, 5).is_file()


def test_batched_training_is_the_same_training_run(mnist: dict) -> None:
    """vmap-stacked models equal models trained one by one up to float rounding."""
    X, y = mnist["X"][:400], mnist["y"][:400]
    config = _config(3)
    batched = train_members_batched(config, X, y, [1, 2])
    for artifact in batched:
        single = train_member(config, X, y, artifact.index)
        a = torch.load(io.BytesIO(artifact.state_dict_bytes), weights_only=True)
        b = torch.load(io.BytesIO(single.state_dict_bytes), weights_only=True)
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
    first = torch.load(io.BytesIO(batched[0].state_dict_bytes), weights_only=True)
    second = torch.load(io.BytesIO(batched[1].state_dict_bytes), weights_only=True)
    assert not torch.allclose(first["fc.weight"], second["fc.weight"])


def test_train_ensemble_in_chunks_uses_the_batched_trainer(mnist: dict, tmp_path: Path) -> None:
    X, y = mnist["X"][:300], mnist["y"][:300]
    train_ensemble(_config(3), X, y, tmp_path, chunk=2)
    metas = [read_member(tmp_path, k).meta for k in range(3)]
    assert [m["trainer"] for m in metas] == ["vmap[2]", "vmap[2]", "loop"]
    # the batch is recorded: retraining model k bit for bit needs the same stacked batch
    assert [m.get("batch_members") for m in metas] == [[0, 1], [0, 1], None]


def test_models_per_chunk() -> None:
    mnist_config = _config(100)
    cifar = preset("cifar", seed=0, input_shape=(3, 32, 32), num_classes=2, sigma=1.0, num_models=9)
    assert models_per_chunk(mnist_config, 12665, torch.device("cpu")) == 1
    assert models_per_chunk(mnist_config, 12665, torch.device("cuda")) == 64
    # 4 GiB of stacked noisy copies at 4 * n * d bytes per model
    assert models_per_chunk(mnist_config, 10**6, torch.device("cuda")) == 4 * 2**30 // (
        4 * 10**6 * 784)
    assert models_per_chunk(cifar, 10000, torch.device("cuda")) == 1  # BatchNorm: loop
    # a requested size is honoured where batching works, on any device
    assert models_per_chunk(mnist_config, 12665, torch.device("cpu"), 8) == 8
    assert models_per_chunk(cifar, 10000, torch.device("cuda"), 8) == 1
    with pytest.raises(ValueError, match="at least 1"):
        models_per_chunk(mnist_config, 12665, torch.device("cpu"), 0)


def test_batched_training_rejects_batchnorm() -> None:
    config = preset("cifar", seed=0, input_shape=(3, 32, 32), num_classes=2, sigma=1.0,
                    num_models=2)
    X = np.zeros((4, 3, 32, 32), np.float32)
    with pytest.raises(ValueError, match="buffers"):
        train_members_batched(config, X, np.zeros(4, np.int64), [0, 1])


@pytest.mark.filterwarnings("ignore:Secure RNG turned off:UserWarning")  # seeded on purpose
@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")  # Opacus' hooks
def test_dp_sgd_reports_a_finite_epsilon(mnist: dict) -> None:
    X, y = mnist["X"][:300], mnist["y"][:300]
    config = _config(1, dp=True)
    artifact = train_member(config, X, y, 0)
    epsilon = artifact.meta["dp_epsilon"]
    assert np.isfinite(epsilon) and epsilon > 0
    assert artifact.meta["dp_delta"] == 1e-5
    # Poisson sampling at rate q = 1 / (batches per epoch), one step per batch, sigma_DP = 4
    batches = -(-300 // config.batch_size)
    accountant = RDPAccountant()
    accountant.history = [(4.0, 1 / batches, batches * config.epochs)]
    assert epsilon == pytest.approx(accountant.get_epsilon(1e-5))
    assert train_member(config, X, y, 0).sha256 == artifact.sha256  # seeded DP noise
    member = load_member(artifact, config)
    assert member.sha256 == artifact.sha256


def test_multiclass_ensemble_votes_and_certifies(tmp_path: Path) -> None:
    """Three Gaussian blobs, an MLP with a softmax head, hard and soft certificates."""
    rng = np.random.default_rng(0)
    centers = np.array([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]], np.float32)
    y = rng.integers(0, 3, 600).astype(np.int64)
    X = (centers[y] + rng.normal(size=(600, 2))).astype(np.float32)
    config = preset("tabular", input_shape=(2,), num_classes=3, sigma=0.5, num_models=12,
                    epochs=3, seed=1)
    train_ensemble(config, X, y, tmp_path)
    X_test = centers.repeat(5, axis=0)
    votes = predict_votes(iter_members(tmp_path), X_test, config)
    assert votes.soft.shape == (12, 15, 3)
    np.testing.assert_allclose(votes.soft.sum(axis=2), 1.0, rtol=1e-5)
    cert = certify_votes(votes, alpha=ALPHA, votes="soft")
    np.testing.assert_array_equal(cert.prediction, np.arange(3).repeat(5))
    assert (certify_votes(votes, alpha=ALPHA).prediction == np.arange(3).repeat(5)).all()


def test_bad_training_data_raises(mnist: dict, tmp_path: Path) -> None:
    config = _config(1)
    with pytest.raises(ValueError, match="float32"):
        train_member(config, mnist["X"].astype(np.float64), mnist["y"], 0)
    with pytest.raises(ValueError, match="labels"):
        train_member(config, mnist["X"], mnist["y"] + 1, 0)
    with pytest.raises(ValueError, match="shape"):
        train_member(config, mnist["X"][:, :, :20], mnist["y"], 0)
    bad = mnist["X"].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_ensemble(config, bad, mnist["y"], tmp_path)


def test_stacked_votes_are_the_per_member_votes(ensemble: Path, votes: VoteMatrices,
                                                mnist: dict) -> None:
    """20 trained MNIST CNNs stacked (in chunks of 20, 7 and 1): the same hard votes as one
    member at a time, soft votes equal up to float rounding; u_k stacked in member order."""
    config = _config(20)
    members = list(iter_members(ensemble))
    for chunk in (20, 7, 1):
        stacked = stacked_votes(stack_members(members, chunk), mnist["X_test"], config)
        np.testing.assert_array_equal(stacked.hard, votes.hard)
        np.testing.assert_allclose(stacked.soft, votes.soft, atol=1e-6)
        assert stacked.sha256 == votes.sha256
    stack = StackedMembers.of(members[:3])
    assert torch.equal(stack.noise[2], members[2].noise) and stack.indices == (0, 1, 2)
    per_member = 4 * (sum(p.numel() for p in members[0].model.parameters())
                      + members[0].noise.numel())
    assert stack.nbytes == 3 * per_member  # no buffers in the MNIST CNN
    # the same stacks and inputs: bit for bit the same votes (the hot path's guarantee)
    again = stacked_votes(stack_members(members, 7), mnist["X_test"], config)
    first = stacked_votes(stack_members(members, 7), mnist["X_test"], config)
    np.testing.assert_array_equal(again.soft, first.soft)


def _members(config: EnsembleConfig, count: int, perturb: bool) -> list[Member]:
    """``count`` members at their seeded initial weights; ``perturb``: BatchNorm running
    statistics drawn from a seeded generator, so that each member's own buffers matter."""
    generator = torch.Generator().manual_seed(5)
    artifacts = []
    for k in range(count):
        model = initial_model(config, member_seeds(config.seed, k))
        for module in model.modules():
            if perturb and isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
                module.running_var.copy_(torch.rand(module.num_features, generator=generator)
                                         + 0.5)
        artifacts.append(MemberArtifact.from_bytes(k, serialize_state_dict(model), {}))
    return [load_member(a, config, device="cpu") for a in artifacts]


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_stacked_votes_with_batch_and_group_norm(norm: str, mnist: dict) -> None:
    """The CIFAR pre-activation ResNet with BatchNorm (eval mode: each member's own running
    statistics, stacked as buffers) and with GroupNorm (the DP-SGD variant) under vmap."""
    config = _config(3, arch="preact_resnet", norm=norm)
    members = _members(config, 3, perturb=norm == "batch")
    X = mnist["X_test"][:8]
    reference = predict_votes(members, X, config)
    stacked = stacked_votes(stack_members(members, 2), X, config)
    np.testing.assert_array_equal(stacked.hard, reference.hard)
    np.testing.assert_allclose(stacked.soft, reference.soft, atol=1e-6)
    buffers = StackedMembers.of(members).buffers
    assert bool(buffers) == (norm == "batch")
    if norm == "batch":
        assert not torch.equal(buffers["out_norm.running_mean"][0],
                               buffers["out_norm.running_mean"][1])


def test_stacked_votes_of_an_mlp_on_tabular_data(tmp_path: Path) -> None:
    """A multi-class MLP ensemble (softmax head): stacked hard votes equal the per-member ones."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300).astype(np.int64)
    X = (rng.normal(size=(300, 5)) + y[:, None]).astype(np.float32)
    config = preset("tabular", input_shape=(5,), num_classes=3, sigma=0.5, num_models=5,
                    epochs=1, seed=2)
    train_ensemble(config, X, y, tmp_path)
    reference = predict_votes(iter_members(tmp_path), X[:50], config)
    stacked = stacked_votes(stack_members(iter_members(tmp_path), 2), X[:50], config)
    np.testing.assert_array_equal(stacked.hard, reference.hard)
    np.testing.assert_allclose(stacked.soft, reference.soft, atol=1e-6)
    with pytest.raises(ValueError, match="float32"):
        stacked_votes(stack_members(iter_members(tmp_path)), X[:5].astype(np.float64), config)
