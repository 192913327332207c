"""RatingenScore: the erosion score of one joint crop, with concurrent crops batched into one forward pass."""

from __future__ import annotations

from collections import deque

import numpy as np
from ray import serve

from deepxray.deployments.common import ModelServer, model_deployment
from deepxray.models.runtime import SCORER_EMBEDDING_OF
from deepxray.settings import default

# The batching defaults are settings (`deepxray.settings`: why these values); `user_config` changes them live.
DEFAULT_MAX_BATCH_SIZE = default("max_batch_size")
DEFAULT_BATCH_WAIT_TIMEOUT_S = default("batch_wait_timeout_s")


# max_ongoing_requests at least max_batch_size, or a batch can never fill: here room for four images' crops.
@model_deployment("RatingenScore", num_cpus=0.5, max_ongoing_requests=40, max_queued_requests=160)
class RatingenScore(ModelServer):
    """The Ratingen scorer on `deepxray.imaging.model_inputs.joint_crops` (one crop per call, batched).

    Batching is live-tunable: the deployment's `user_config` (`max_batch_size`, `batch_wait_timeout_s`) reaches
    `reconfigure` on every replica without a restart.

    Args:
        model_dir: The artifact directory; None: the settings' folder (`DEEPXRAY_MODELS_DIR`), else the shipped model.
        threads: TensorFlow threads; None for the replica's CPU share, rounded, at least one.
        max_batch_size: Most crops in one forward pass.
        batch_wait_timeout_s: Longest wait for a batch to fill.
    """

    model_name = "ratingen_score"
    embedding_of = SCORER_EMBEDDING_OF

    def __init__(
        self,
        model_dir: str | None = None,
        threads: int | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_TIMEOUT_S,
    ):
        super().__init__(model_dir, threads)
        self.recent_batch_sizes: deque[int] = deque(maxlen=1000)
        self.reconfigure({"max_batch_size": max_batch_size, "batch_wait_timeout_s": batch_wait_timeout_s})

    def reconfigure(self, config: dict) -> None:
        """Applies `user_config`: {"max_batch_size": int, "batch_wait_timeout_s": float} (either may be left out)."""
        if "max_batch_size" in config:
            size = int(config["max_batch_size"])
            if size < 1:
                raise ValueError(f"max_batch_size must be at least 1, got {size}")
            self.score.set_max_batch_size(size)
        if "batch_wait_timeout_s" in config:
            wait = float(config["batch_wait_timeout_s"])
            if wait < 0:
                raise ValueError(f"batch_wait_timeout_s must not be negative, got {wait}")
            self.score.set_batch_wait_timeout_s(wait)

    # A batch is counted in crops, not calls (`batch_size_fn`), so max_batch_size means the same whether a call
    # carries one joint's crop or a hand's ten (`crops_per_call`).
    @serve.batch(
        max_batch_size=DEFAULT_MAX_BATCH_SIZE,
        batch_wait_timeout_s=DEFAULT_BATCH_WAIT_TIMEOUT_S,
        batch_size_fn=lambda calls: sum(len(crops) for crops in calls),
    )
    async def score(self, calls: list[np.ndarray]) -> list[tuple[list[tuple[np.ndarray, np.ndarray | None]], str]]:
        """Called with (n, 96, 96) crops; Serve hands the method every call pending, run as one forward pass ->
        for each call, each crop's 6 probabilities and embedding (float16 on the wire: it only ranks similar
        joints), and this replica's model tag."""
        crops = np.concatenate(calls)
        self.recent_batch_sizes.append(len(crops))
        scored = [(p, None if e is None else e.astype(np.float16)) for p, e in await self.predict_with_embedding(crops)]
        ends = np.cumsum([len(call) for call in calls])
        return [(scored[end - len(call) : end], self.model.tag) for call, end in zip(calls, ends, strict=True)]

    def batch_sizes(self) -> list[int]:
        """Sizes of the most recent forward passes, oldest first (for tests and tuning)."""
        return list(self.recent_batch_sizes)

    def batch_settings(self) -> dict:
        """The batching in force."""
        return {
            "max_batch_size": self.score._get_max_batch_size(),
            "batch_wait_timeout_s": self.score._get_batch_wait_timeout_s(),
        }
