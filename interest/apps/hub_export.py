"""A bundle as a Hugging Face Hub repository: its files and a model card, in a folder ready to upload.

The Hub names and downloads themselves (``interest.load("hf-hub:ORG/NAME")``)
live in :mod:`interest.core.hub`, which never reads a bundle; this app reads one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from interest.core.errors import InterestError
from interest.core.hub import is_hub_name, parse_hub_name, resolve_bundle
from interest.bundle.format import MODEL_JSON
from interest.bundle.io import without_local_paths
from interest.scoring import load_model


def _card(meta: dict, name: str, license: str) -> str:
    """README.md of a Hub bundle: YAML front matter (license, use, provenance, backbone, metrics) and prose."""
    backbone = meta.get("backbone", {}).get("id", "unknown")
    provenance = meta.get("provenance") or {}
    data = meta.get("data") or {}
    source = provenance.get("source") or (
        f"Flickr favourites of collection {Path(str(data.get('collection', 'unknown'))).name}" if data else "unknown"
    )
    metrics = meta.get("metrics") or {}
    consent = (
        "Flickr users did not consent to having their favourites used to train models; the photos stay their "
        "owners' (see each photo's licence). The bundle stores no images, only model weights and, for "
        "personalised users, their ids and heads: remove a user's head on request."
    )
    front = {
        "license": license,
        "library_name": "interest",
        "tags": ["image-aesthetics", "interestingness", "clip", "flickr"],
        "backbone": backbone,
        "intended_use": "Ranking and curating a person's own photos by how commonly interesting they are "
                        "likely to be, with optional per-user taste; not for judging people or for moderation.",
        "data_provenance": source,
        "consent": consent,
        "metrics": metrics,
    }
    # JSON is valid YAML: the front matter needs no YAML writer and keeps nested metrics exact
    lines = ["---"] + [f"{k}: {json.dumps(v, sort_keys=True, default=str)}" for k, v in front.items()] + ["---", ""]
    body = f"""# {name}

An `interest` model bundle: a common interestingness (CI) score for photos,
{'trend groups' if meta.get('thresholds', {}).get('group_cuts') else 'no trend groups'} and per-user heads.

```python
import interest
model = interest.load("hf-hub:ORG/{name}")
model.score(["photo.jpg"])
```

- **Backbone**: `{backbone}` (images are embedded with it; embeddings of another backbone are refused).
- **Data**: {source}.
- **Consent**: {consent}
- **Intended use**: {front['intended_use']}
- **Metrics**: see the front matter (held-out evaluation recorded at training; empty for imported heads).
"""
    return "\n".join(lines) + body


def export_hub(model: str | os.PathLike, out: str | os.PathLike, *, license: str = "other") -> Path:
    """Write a Hub-ready folder at ``out``: the bundle's files and a model card (README.md).

    ``model`` is a bundle directory or Hub name. Upload the folder with
    ``hf upload ORG/NAME OUT`` (or ``huggingface_hub.upload_folder``);
    ``interest.load("hf-hub:ORG/NAME")`` then loads it. Written into a
    temporary folder and renamed, so ``out`` is never half-written.
    """
    src = resolve_bundle(str(model)) if is_hub_name(str(model)) else Path(model)
    load_model(src)  # refuses a damaged bundle before anything is written
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InterestError(f"{out}: exists and is not empty; choose a new folder for the Hub export")
    out.parent.mkdir(parents=True, exist_ok=True)
    # older bundles hold the collection's path on the trainer's disk: the export names it (parts keep their checksums)
    meta = without_local_paths(json.loads((src / MODEL_JSON).read_text(encoding="utf-8")))
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.chmod(0o755)
        for name in meta.get("parts", {}):
            shutil.copyfile(src / name, tmp / name)
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        repo_name = out.name if not is_hub_name(str(model)) else parse_hub_name(str(model))[0].split("/")[1]
        (tmp / "README.md").write_text(_card(meta, repo_name, license), encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
