"""The embed stage's entry points: image files to an embeddings table.

The work is done by the image pipeline in :mod:`interest.pipeline` (reader,
decoder, encoder, writer, composed by a shard runner; the local and the Ray
engine run that same runner). Rows are keyed by (photo_id, sha256 of the
file) within the backbone's folder, so a second run re-embeds nothing, a
changed file is re-embedded, and a run killed at any point resumes from its
parts to the same table.
"""

from __future__ import annotations

from interest.pipeline.local import embed_collection, embed_folder, embed_paths
from interest.pipeline.writer import record_photo_status

__all__ = ["embed_collection", "embed_folder", "embed_paths", "record_photo_status"]
