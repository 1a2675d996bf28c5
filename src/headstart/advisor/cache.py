"""Plans remembered by what they were made from, so that fitting the same data again skips the advisor.

The measuring pass (every image through the network for the similarity signals) and any
fine-tuning trial cost far more than the linear head they decide about; without this, a second
``fit`` with ``strategy="auto"`` would redo them while every code already sits in the feature cache.

A plan is stored as JSON under ``<cache>/plans/<key>.json``. The key hashes what the plan depends
on: the content of every measured image (the whole training set, or the advisor's sample of a
larger one), all the labels, the backbone's fingerprint, every setting the advisor reads, and the
headstart version, whose rules may change. Changing any of them measures afresh. Loading reads
JSON only; a damaged or foreign entry is ignored and overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from .._atomic import cache_write_failed, write_text
from .._version import __version__, code_fingerprint
from ..backbones import PRE_LOGITS, BackboneSpec, Preprocessing
from .plan import Plan

log = logging.getLogger(__name__)

PLAN_FORMAT = 2  # 2: keyed by the measured images' hashes only


def plan_key(spec: BackboneSpec, content_hashes: list[str], labels: np.ndarray, preprocessing: Preprocessing, settings: dict) -> str:
    """What the plan depends on, hashed: the measured images' content hashes, in order, and all labels."""
    digest = hashlib.sha256()
    header = {"format": PLAN_FORMAT, "headstart": __version__, "code": code_fingerprint(), "fingerprint": spec.fingerprint(PRE_LOGITS, preprocessing), **settings}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for content_hash in content_hashes:
        digest.update(content_hash.encode())
    digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()[:32]


def load_plan(root: Path, key: str) -> Plan | None:
    path = Path(root) / "plans" / f"{key}.json"
    try:
        return Plan.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (FileNotFoundError, NotADirectoryError):  # not cached, or no cache folder at all
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring an unreadable cached plan %s (%s)", path, exc)
        return None


def store_plan(root: Path, key: str, plan: Plan) -> None:
    try:
        write_text(Path(root) / "plans" / f"{key}.json", json.dumps(plan.to_dict(), default=_jsonable))
    except OSError as exc:  # a read-only cache costs a re-measurement next time, nothing else
        cache_write_failed(root, exc)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a plan")
