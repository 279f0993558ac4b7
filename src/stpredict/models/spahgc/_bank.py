"""SpaHGC's reference bank: training spots' embeddings and expression, and exact blocked cosine retrieval."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch


def _unit_rows(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x, dtype=np.float32))
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)


def cosine_topk(
    queries: np.ndarray,
    keys: np.ndarray,
    k: int,
    *,
    allowed: np.ndarray | None = None,
    query_block: int = 1024,
    key_block: int = 16384,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` keys most cosine-similar to every query: ``(indices (n, k), similarities (n, k))``, best first.

    Exact. Memory stays ``O(query_block * key_block + n * k)`` whatever the number of keys: similarities
    of one block of queries against one block of keys are merged into a running top-k. ``allowed``
    (boolean, one per key) restricts the candidates; fewer than ``k`` candidates is an error.

    Examples
    --------
    >>> import numpy as np
    >>> from stpredict.models.spahgc._bank import cosine_topk
    >>> keys = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> idx, sim = cosine_topk(np.array([[2.0, 0.1]]), keys, k=2)
    >>> print(idx, sim.round(3))
    [[0 2]] [[0.999 0.742]]
    """
    candidates = np.arange(len(keys)) if allowed is None else np.flatnonzero(allowed)
    if len(candidates) < k:
        msg = f"Only {len(candidates)} reference spot(s) to choose {k} from; lower k or give more reference spots."
        raise ValueError(msg)
    q = _unit_rows(queries)
    best_sim = torch.full((len(q), k), -float("inf"))
    best_idx = torch.zeros((len(q), k), dtype=torch.long)
    for start in range(0, len(candidates), key_block):
        block = torch.from_numpy(candidates[start : start + key_block])
        kb = _unit_rows(np.asarray(keys)[block.numpy()])
        for qs in range(0, len(q), query_block):
            sim = q[qs : qs + query_block] @ kb.T
            merged_sim = torch.cat([best_sim[qs : qs + query_block], sim], dim=1)
            merged_idx = torch.cat([best_idx[qs : qs + query_block], block.expand(len(sim), -1)], dim=1)
            top = merged_sim.topk(k, dim=1)
            best_sim[qs : qs + query_block] = top.values
            best_idx[qs : qs + query_block] = merged_idx.gather(1, top.indices)
    return best_idx.numpy(), best_sim.numpy()


@dataclass(frozen=True)
class ReferenceBank:
    """Spots of the training slides that target spots retrieve: embedding, expression, slide and spot name.

    ``embeddings`` are the standardised image representation (retrieval and node features), ``expression``
    the z-scored training targets. Arrays are read-only: the bank is frozen once the model is fitted.

    Examples
    --------
    >>> import numpy as np
    >>> from stpredict.models.spahgc import ReferenceBank
    >>> bank = ReferenceBank(np.eye(2), np.ones((2, 3)), slide=np.array(["a", "b"]), spot=np.array(["s1", "s2"]))
    >>> bank.node_features(np.array([1])).tolist(), bank.embeddings.flags.writeable
    ([[0.0, 1.0, 1.0, 1.0, 1.0]], False)
    >>> ReferenceBank.from_state(bank.to_state()).spot.tolist()
    ['s1', 's2']
    """

    embeddings: np.ndarray
    expression: np.ndarray
    slide: np.ndarray
    spot: np.ndarray

    def __post_init__(self) -> None:
        for name in ("embeddings", "expression", "slide", "spot"):
            values = np.array(getattr(self, name), copy=True)
            values.setflags(write=False)
            object.__setattr__(self, name, values)

    def __len__(self) -> int:
        return len(self.embeddings)

    def node_features(self, index: np.ndarray) -> np.ndarray:
        """Reference node features ``[embedding ‖ expression]`` of the chosen spots."""
        return np.hstack([self.embeddings[index], self.expression[index]]).astype(np.float32)

    def to_state(self) -> dict[str, np.ndarray]:
        """Arrays only (safetensors holds no strings): names as UTF-8 JSON bytes."""
        names = {"slide": self.slide.tolist(), "spot": self.spot.tolist()}
        return {
            "embeddings": self.embeddings.astype(np.float32),
            "expression": self.expression.astype(np.float32),
            "names": np.frombuffer(json.dumps(names).encode(), dtype=np.uint8).copy(),
        }

    @classmethod
    def from_state(cls, state) -> ReferenceBank:
        names = json.loads(np.asarray(state["names"], dtype=np.uint8).tobytes().decode())
        return cls(
            embeddings=np.asarray(state["embeddings"]),
            expression=np.asarray(state["expression"]),
            slide=np.array(names["slide"], dtype=str),
            spot=np.array(names["spot"], dtype=str),
        )
