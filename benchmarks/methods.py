"""Method registry of the benchmarks: names -> built extractors (or the reason they were skipped).

Every method goes through :func:`models.build`; a method that cannot be built (no trained
weights yet, a module still missing, a bad weight file) is kept with a one-line ``skipped`` reason
so that one benchmark run reports every requested method. An unknown name is an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from functools import cached_property

import cv2
import numpy as np
import torch
import torch.nn as nn

import models
from models.base import Extractor
from models.conventions import FEATURE_KEYS
from models.errors import BadInputError
from models.matchers import match_pair
from models.precision import extractor_precision

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when the exported feature format or extraction protocol changes


def parse_method_names(text: str | None) -> list[str]:
    """``"sift, orb"`` -> ``["sift", "orb"]`` (order kept, duplicates dropped); unknown names raise."""
    names = list(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    if not names:
        raise BadInputError(f"no method given; available: {', '.join(models.METHODS)}")
    unknown = [n for n in names if n not in models.METHODS]
    if unknown:
        raise BadInputError(f"unknown method {unknown[0]!r}; available: {', '.join(models.METHODS)}")
    return names


def parse_weights(items: list[str] | None) -> dict[str, str]:
    """``["traqpoint-lite=run/x.pt"]`` -> ``{"traqpoint-lite": "run/x.pt"}``."""
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise BadInputError(f"--weights expects METHOD=PATH, got {item!r}")
        parse_method_names(name)
        out[name] = path
    return out


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


@dataclass
class Method:
    """One benchmark method: its extractor and matcher, or why it was skipped."""

    name: str
    extractor: Extractor | None = None
    skipped: str | None = None
    weights: str | None = field(default=None, repr=False)

    @property
    def matcher(self) -> str:
        """Name of the matcher in :mod:`models.matchers` used for this method's descriptors."""
        return self.extractor.default_matcher if self.extractor else ""

    @property
    def matcher_kwargs(self) -> dict:
        """The matcher's settings for tracking and SfM (:attr:`models.base.Extractor.matcher_kwargs`)."""
        return self.extractor.matcher_settings() if self.extractor else {}

    @property
    def two_view_matcher_kwargs(self) -> dict:
        """The matcher's settings for one two-view estimate (relative pose, homography)."""
        return self.extractor.matcher_settings(two_view=True) if self.extractor else {}

    def describe(self) -> dict:
        """Settings of this method that change numbers (for the result file's config)."""
        if self.extractor is None:
            return {"skipped": self.skipped}
        return {
            "num_keypoints": self.extractor.num_keypoints,
            "device": str(self.extractor.device),
            "precision": extractor_precision(self.extractor),  # what ran: "n/a" for OpenCV methods
            "matcher": self.matcher,
            "matcher_kwargs": self.matcher_kwargs,
            "two_view_matcher_kwargs": self.two_view_matcher_kwargs,
            "weights": self.weights,
        }

    @cached_property
    def cache_key(self) -> str:
        """Hash of everything that changes the extracted features: class, settings, weight values."""
        ext = self.extractor
        if ext is None:
            raise BadInputError(f"method {self.name} was skipped: {self.skipped}")
        h = hashlib.sha1()
        settings = {
            k: (str(v) if isinstance(v, torch.device) else v)
            for k, v in sorted(vars(ext).items())
            if not k.startswith("_") and isinstance(v, int | float | str | bool | tuple | torch.device)
        }
        ident = {"v": CACHE_VERSION, "name": self.name, "class": f"{type(ext).__module__}.{type(ext).__qualname__}"}
        h.update(json.dumps({**ident, **settings, "cv2": cv2.__version__}, sort_keys=True).encode())
        for module in (v for v in vars(ext).values() if isinstance(v, nn.Module)):
            for key, tensor in module.state_dict().items():
                h.update(key.encode())
                h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def extract(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Features of one grey ``uint8`` image as numpy arrays (keys of :data:`models.conventions.FEATURE_KEYS`)."""
        feats = self.extractor.extract_numpy(image)[0]
        out = {k: np.ascontiguousarray(feats[k].numpy(), dtype=np.float32) for k in FEATURE_KEYS}
        n = len(out["keypoints"])
        if out["keypoints"].shape != (n, 2) or out["scores"].shape != (n,) or out["descriptors"].ndim != 2:
            raise BadInputError(f"{self.name} returned features of shapes {[v.shape for v in out.values()]}")
        return out

    def match(self, desc0: np.ndarray, desc1: np.ndarray, two_view: bool = False) -> np.ndarray:
        """Match two descriptor sets with the method's own matcher -> ``matches [K, 2]`` int64;
        ``two_view``: with its settings for one two-view estimate (else those for tracking and SfM)."""
        if len(desc0) == 0 or len(desc1) == 0:
            return np.zeros((0, 2), dtype=np.int64)
        kwargs = self.two_view_matcher_kwargs if two_view else self.matcher_kwargs
        matches, _ = match_pair(torch.from_numpy(desc0), torch.from_numpy(desc1), self.matcher, **kwargs)
        return matches.numpy().astype(np.int64)


def build_methods(
    names: list[str],
    device: str = "cpu",
    num_keypoints: int = 2048,
    weights: dict[str, str] | None = None,
    precision: str | None = None,
    two_view_threshold: float | None = None,
) -> list[Method]:
    """Build every named method; those that fail to build come back with ``skipped`` set.

    ``precision`` goes to the methods that have one (:data:`models.factory.PRECISION_METHODS`),
    ``two_view_threshold`` to the dual-softmax ones (:data:`models.factory.TWO_VIEW_THRESHOLD_METHODS`).
    """
    weights = weights or {}
    methods = []
    for name in names:
        try:
            ext = models.build(
                name, weights=weights.get(name), device=device, num_keypoints=num_keypoints, precision=precision,
                two_view_threshold=two_view_threshold,
            )
        except Exception as err:  # noqa: BLE001 - any build failure is reported, the other methods still run
            log.debug("building %s failed", name, exc_info=True)
            methods.append(Method(name, skipped=_one_line(err)))
            continue
        methods.append(Method(name, extractor=ext, weights=weights.get(name)))
    return methods
