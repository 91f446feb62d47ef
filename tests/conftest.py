"""Shared fixtures: small synthetic worlds, generated once per test session."""

from __future__ import annotations

import os

import pytest

# Keep each test process to one BLAS/torch thread: CI has 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Progress bars are for people at a terminal; in test logs (and the CLI's stderr checks) they are noise.
os.environ.setdefault("TQDM_DISABLE", "1")
# Exported image encoders (interest/imaging/onnx_encoder.py) go to a folder of this test session, never
# the user's ~/.cache; CLI subprocesses inherit it, so the suite exports each small model once.
if "INTEREST_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["INTEREST_CACHE"] = tempfile.mkdtemp(prefix="interest-test-cache-")
    atexit.register(shutil.rmtree, os.environ["INTEREST_CACHE"], True)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A small world with directly-written 64-d embeddings (no images): fast to make."""
    from interest.synthetic.world import generate_world

    root = tmp_path_factory.mktemp("small_world")
    generate_world(root, n_users=120, n_photos=1500, n_topics=16, render=False, embed_dim=64, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def rendered_world(tmp_path_factory):
    """A small world rendered as real JPEG files (no embeddings yet)."""
    from interest.synthetic.world import generate_world

    root = tmp_path_factory.mktemp("rendered_world")
    generate_world(root, n_users=60, n_photos=300, n_topics=8, render=True, seed=1, progress=False)
    return root
