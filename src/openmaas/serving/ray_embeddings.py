"""A sentence-embedding deployment's replicas as Ray actors (`placement: ray`): each actor holds
the encoder (serving/runtimes/embedding.py); `serving/ray_pool.py` keeps the actors.

The API server holds a `RayEmbeddingRuntime` where a local `EmbeddingRuntime` would be: it counts
tokens with the model's own tokenizer (told by a loaded replica) to admit a request, and sends the
texts to the least busy replica. Embeddings are idempotent: a call on a replica that dies is sent
once more to another, so the request is answered and metered once. It counts the requests it has
sent and not had answered (`in_flight`), so a deployment with `min_replicas: 0` releases its actors
once idle, as a /predict one does.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer

from openmaas.serving.encoders.sentence import Embeddings
from openmaas.serving.ray_pool import ReplicaEvents, ReplicaPool, ReplicaSpec, node_id, replaced
from openmaas.serving.runtimes.embedding import EmbeddingRuntime
from openmaas.storage import open_store
from openmaas.tasks import SENTENCE_EMBEDDING


@dataclass(frozen=True)
class EncoderFacts:
    """What the API server needs to check and admit requests, told by a loaded replica."""

    dimensions: int
    max_length: int
    max_inputs: int
    tokenizer_json: str  # truncating at `max_length`, as the encoder counts
    node_id: str


class EmbeddingReplica:
    """The actor: one sentence encoder, built from the shared store."""

    def __init__(self, spec: ReplicaSpec) -> None:
        with open_store(spec.storage_url).reading(spec.artifact) as folder:
            self._runtime = EmbeddingRuntime(folder, spec.config)

    def facts(self) -> EncoderFacts:
        runtime = self._runtime
        encoder = runtime.encoder
        return EncoderFacts(
            encoder.dimensions, encoder.max_length, runtime.max_inputs, encoder.tokenizer.to_str(), node_id()
        )

    async def embed(self, texts: list[str]) -> Embeddings:
        return await self._runtime.embed(texts)


class RemoteEncoder:
    """The encoder's facts and token counts, on the API server."""

    def __init__(self, facts: EncoderFacts) -> None:
        self.dimensions = facts.dimensions
        self.max_length = facts.max_length
        self.tokenizer = Tokenizer.from_str(facts.tokenizer_json)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(encoding.ids) for encoding in self.tokenizer.encode_batch(texts)]


class RayEmbeddingRuntime:
    """A sentence-embedding deployment's replicas on Ray, as the API server's directory holds it."""

    task = SENTENCE_EMBEDDING

    def __init__(self, spec: ReplicaSpec, replicas: int, events: ReplicaEvents | None = None) -> None:
        """Start `replicas` actors and wait until they have loaded (on the replica loader thread)."""
        self.version = spec.config.model_version
        self.pool = ReplicaPool(EmbeddingReplica, spec, replicas, events)
        facts: EncoderFacts = self.pool.facts[0]
        self.encoder = RemoteEncoder(facts)
        self.max_inputs = facts.max_inputs
        self.nodes = [f.node_id for f in self.pool.facts]
        self.running = 0  # requests sent and not answered (a replaced runtime drains to 0)
        self._closed = False

    @property
    def replicas(self) -> int:
        return len(self.pool)

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    @property
    def in_flight(self) -> int:
        """`running`, as the replica manager asks before it scales an idle deployment to zero."""
        return self.running

    async def embed(self, texts: list[str]) -> Embeddings:
        if self._closed:
            raise replaced()
        self.running += 1
        try:
            embeddings: Embeddings = await self.pool.call("embed", texts)
            return embeddings
        finally:
            self.running -= 1

    def stop_admitting(self) -> None:
        self._closed = True

    def close(self) -> None:
        self._closed = True
        self.pool.close()
