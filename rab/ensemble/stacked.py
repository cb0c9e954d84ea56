"""Votes of many ensemble members at once: stacked parameters evaluated with ``vmap``.

The votes are those of :func:`rab.ensemble.predict.predict_votes` (eq. 19): member k's hard
vote (from its logits) and soft vote (class probabilities) on x + u_k. Here up to
:data:`MEMBER_CHUNK` members are held as ONE set of stacked parameters and buffers
(``torch.func.stack_module_state``) with their test-time noise as one tensor (k, *input_shape),
and one ``vmap``-ed ``functional_call`` runs them all on a block of inputs. u_k is a function
of member k's hash alone (:func:`rab.ensemble.noise.inference_noise`), not of the input, so
it is computed once, when the members are stacked, and reused for every input.

Numerics: each member's computation is its own (BatchNorm in eval mode uses that member's
running statistics; GroupNorm normalises per sample), so the hard votes equal the per-member
path's; the soft votes may differ from it in the last bits (other kernels). The batch path
(``rab.evaluation.certify_members``) and the hot serving path both vote through
:func:`stacked_votes`, with blocks that depend only on N and the number of inputs, so the two
give identical certificates for the same inputs.

Memory: a forward holds at most :data:`PAIRS_PER_FORWARD` (member, input) pairs of
activations; the stacked members themselves take :attr:`StackedMembers.nbytes`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from rab.ensemble.config import EnsembleConfig
from rab.ensemble.predict import Member, check_inputs
from rab.ensemble.vote import VoteMatrices
from rab.nets import logits_to_class, logits_to_proba

__all__ = ["MEMBER_CHUNK", "PAIRS_PER_FORWARD", "StackedMembers", "stack_members",
           "stacked_votes"]

#: Members stacked together (one set of parameters per chunk): 100 MNIST CNNs are 110 MB.
MEMBER_CHUNK = 100
#: (member, input) pairs of one forward pass: bounds the activations (MNIST CNN: ~50 kB each).
PAIRS_PER_FORWARD = 4096


@dataclass(frozen=True, eq=False)
class StackedMembers:
    """Members ``indices`` as one stacked model on one device.

    ``params`` / ``buffers``: the members' tensors stacked along a leading member axis;
    ``noise``: their u_k, (k, *input_shape); ``skeleton``: the architecture on the meta device
    (no storage), called functionally with the stacked tensors."""

    indices: tuple[int, ...]
    sha256: tuple[str, ...]
    params: dict[str, torch.Tensor] = field(repr=False)
    buffers: dict[str, torch.Tensor] = field(repr=False)
    noise: torch.Tensor = field(repr=False)
    skeleton: nn.Module = field(repr=False)

    @classmethod
    def of(cls, members: Sequence[Member]) -> StackedMembers:
        """Stack loaded members (same architecture, same device)."""
        if not members:
            raise ValueError("no members to stack")
        params, buffers = stack_module_state([m.model for m in members])  # copies
        return cls(
            tuple(m.index for m in members), tuple(m.sha256 for m in members),
            {k: v.detach() for k, v in params.items()}, dict(buffers),
            torch.stack([m.noise for m in members]),
            copy.deepcopy(members[0].model).to("meta").eval(),
        )

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def device(self) -> torch.device:
        return self.noise.device

    @property
    def nbytes(self) -> int:
        """Bytes of the stacked parameters, buffers and noise."""
        tensors = [*self.params.values(), *self.buffers.values(), self.noise]
        return int(sum(t.numel() * t.element_size() for t in tensors))

    @torch.no_grad()
    def logits(self, X: torch.Tensor) -> torch.Tensor:
        """Logits (k, m, outputs) of every member on every input of X (m, *input_shape),
        member k on x + u_k."""

        def member(params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                   noise: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.skeleton, (params, buffers), (x + noise,))

        out: torch.Tensor = torch.vmap(member, in_dims=(0, 0, 0, None))(
            self.params, self.buffers, self.noise, X.to(self.device)
        )
        return out


def stack_members(members: Iterable[Member], chunk: int = MEMBER_CHUNK) -> Iterator[StackedMembers]:
    """The members in stacks of ``chunk`` (lazily: at most one chunk of unstacked members is
    held at a time when ``members`` is an iterator)."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    pending: list[Member] = []
    for member in members:
        pending.append(member)
        if len(pending) == chunk:
            yield StackedMembers.of(pending)
            pending = []
    if pending:
        yield StackedMembers.of(pending)


@torch.no_grad()
def stacked_votes(
    stacks: Iterable[StackedMembers], X_test: np.ndarray, config: EnsembleConfig
) -> VoteMatrices:
    """Hard and soft votes of every stacked member on every input (eq. 19), as
    :func:`rab.ensemble.predict.predict_votes` defines them; X_test float32 (m, *input_shape).

    Inputs go through in blocks of ``PAIRS_PER_FORWARD // len(stack)`` (at least one)."""
    check_inputs(X_test, config)
    X = torch.tensor(X_test)  # a copy: X_test may be a read-only array
    hard, soft = [], []
    digests: list[str] = []
    for stack in stacks:
        block = max(1, PAIRS_PER_FORWARD // len(stack))
        labels, probas = [], []
        for begin in range(0, len(X), block):
            logits = stack.logits(X[begin : begin + block])
            flat = logits.reshape(-1, logits.shape[-1])  # (k * b, outputs), member-major
            shape = logits.shape[:2]
            labels.append(logits_to_class(flat, config.num_classes).reshape(shape).cpu())
            probas.append(logits_to_proba(flat, config.num_classes).float()
                          .reshape(*shape, -1).cpu())
        hard.append(torch.cat(labels, dim=1).numpy().astype(np.int64))
        soft.append(torch.cat(probas, dim=1).numpy())
        digests.extend(stack.sha256)
    if not digests:
        raise ValueError("no models to vote")
    return VoteMatrices(np.concatenate(hard), np.concatenate(soft), tuple(digests),
                        config.sigma)
