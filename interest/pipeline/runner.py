"""The shard runner: one shard of work items through decode -> encode -> write.

A shard is columns ``row``, ``photo_id``, ``path``, ``sha256`` (see
:meth:`~interest.pipeline.reader.WorkItems.todo_columns`). The local engine
runs one runner over its shard with a pool of decoding processes; the Ray
engine runs the same three steps of the same runner as its stages (decode
tasks, encoder actors, write tasks). Callers that want embeddings in memory
(scoring, curation, the service) use :meth:`ShardRunner.embed_files` and
:meth:`ShardRunner.embed_images`, which are the same decode and encode steps
without the writer, so one file gives the same embedding through every caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from interest.imaging.images import DEFAULT_MAX_PIXELS
from interest.pipeline.decoder import DecodedBatch, Decoder, Failure, Transform, backbone_transform, prepare_images
from interest.pipeline.encoder import Encoder, split_norms

if TYPE_CHECKING:  # the writer needs pandas through the collection module; scoring paths need neither
    from interest.imaging.backbones import Backbone
    from interest.pipeline.writer import PartWriter


@dataclass
class EncodedBatch:
    """Raw embeddings (n, dim) of the readable images of one batch, their positions (n,), and the failures."""

    index: np.ndarray
    raw: np.ndarray
    failed: list[Failure]


@dataclass
class ShardResult:
    """What a shard's run found: {row: None (embedded) or failure reason}, and the rows embedded."""

    status: dict[int, str | None] = field(default_factory=dict)
    embedded: int = 0


class ShardRunner:
    """Decode -> encode (-> write) for one shard; ``transform`` and ``encoder`` come from the backbone."""

    def __init__(self, transform: Transform, encoder: Encoder, *, batch_size: int = 64, workers: int = 0,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.encoder = encoder
        self.decoder = Decoder(transform, batch_size=batch_size, workers=workers, max_pixels=max_pixels)

    # the three steps, which the Ray engine also runs as its stages

    def encode(self, pixels: np.ndarray | None) -> np.ndarray:
        """Raw embeddings (n, dim) of a decoded batch (none for None)."""
        if pixels is None or len(pixels) == 0:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        return np.asarray(self.encoder.encode_raw(pixels), dtype=np.float32)

    @staticmethod
    def write(writer: "PartWriter", photo_ids: Sequence[str], shas: Sequence[str], raw: np.ndarray) -> None:
        """Unit rows and their norms (the contract's embedding and norm) to the part writer."""
        unit, norms = split_norms(raw)
        for pid, sha, row, norm in zip(photo_ids, shas, unit, norms):
            writer.add(str(pid), str(sha), row, float(norm))

    def batches(self, paths: Sequence, on_batch: Callable[[int], None] | None = None) -> Iterator[EncodedBatch]:
        """Encoded batches of ``paths`` in order: the model encodes one while the workers decode the next."""
        for batch in self.decoder.batches(paths):
            yield self._encoded(batch)
            if on_batch is not None:
                on_batch(len(batch.index) + len(batch.failed))

    def _encoded(self, batch: DecodedBatch) -> EncodedBatch:
        return EncodedBatch(batch.index, self.encode(batch.pixels), batch.failed)

    def run(self, shard: dict[str, np.ndarray], writer: "PartWriter",
            on_batch: Callable[[int], None] | None = None) -> ShardResult:
        """Embed a shard's files and write their rows as parts; returns each row's status."""
        result = ShardResult()
        rows, ids, shas = shard["row"], shard["photo_id"], shard["sha256"]
        for encoded in self.batches(shard["path"], on_batch):
            self.write(writer, ids[encoded.index], shas[encoded.index], encoded.raw)
            result.status.update({int(rows[j]): None for j in encoded.index})
            result.status.update({int(rows[f.index]): f.reason for f in encoded.failed})
            result.embedded += len(encoded.index)
        writer.flush()
        return result

    # in memory, for the callers that score

    def embed_files(self, files: Sequence[Path], *, raw: bool = False,
                    on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[Failure | None]]:
        """(n, dim) float32 embeddings of ``files`` (NaN rows where unreadable) and each file's failure or None.

        Unit rows, or with ``raw`` the rows before normalisation (for heads trained on raw features).
        """
        out = np.full((len(files), self.encoder.dim), np.nan, dtype=np.float32)
        failures: list[Failure | None] = [None] * len(files)
        for encoded in self.batches(files, on_batch):
            out[encoded.index] = encoded.raw if raw else split_norms(encoded.raw)[0]
            for failure in encoded.failed:
                failures[failure.index] = failure
        return out, failures

    def embed_images(self, images: Sequence, *, raw: bool = False) -> np.ndarray:
        """(n, dim) float32 embeddings of decoded RGB images (PIL), ``batch_size`` at a time, in this process."""
        size = self.decoder.batch_size
        parts = [self.encode(prepare_images(images[s : s + size], self.decoder.transform))
                 for s in range(0, len(images), size)]
        out = np.concatenate(parts) if parts else np.zeros((0, self.encoder.dim), dtype=np.float32)
        return out if raw else split_norms(out)[0]


def shard_runner(backbone: Backbone, *, batch_size: int = 64, workers: int = 0,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> ShardRunner:
    """The runner of ``backbone``: its NumPy decode transform and the backbone itself as the encoder."""
    return ShardRunner(backbone_transform(backbone), backbone, batch_size=batch_size, workers=workers,
                       max_pixels=max_pixels)
