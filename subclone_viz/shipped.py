"""Figures shipped with the package: the embedded parents' profiles and block ablations, ready at once.

Profiling SmolLM2 and ablating its blocks takes a laptop minutes; a learner opening notebook 1 should see the
picture in seconds. So the package ships, for each embedded text parent, the profile and the block ablation
that the notebooks would measure in full mode, in ``subclone_viz/shipped_data/``:

* ``<parent>.profile.npz``: the profile, read by :meth:`~subclone_viz.Profile.load` (which validates every
  array against the parent's dims); past about 2 MB its sums are stored as float32, without the per-shard
  copies that the calibration explorer resamples;
* ``<parent>.json``: a :class:`ShippedFigures` record: the block ablation, the profile file's SHA-256, and how
  both were made (the command of ``tools/make_shipped.py``, the text and token counts, the date, the version).

:func:`load_shipped` reads both back and checks that they agree (the digest, the parent's name, one ablation
entry per block): anything wrong is a :class:`~subclone_viz._atomic.DamagedFileError` naming the file. No
parent is loaded and no model runs, so the figures of notebooks 1 and 2 can be drawn before the parent is.
They describe the parent as shipped; recompute on your own text with :func:`~subclone_viz.profile` and
:func:`~subclone_viz.block_ablation` when the text matters.

Example::

    >>> from subclone_viz import shipped
    >>> "smollm2-135m" in shipped.available()
    True
    >>> figures = shipped.load_shipped("smollm2-135m")     # milliseconds: no parent, no model run
    >>> figures.profile.num_layers, len(figures.ablation.removed)
    (30, 30)
    >>> figures.describe()
    'shipped with subclone_viz: profile of 8,192 tokens of ..., block ablation on ...'
    >>> shipped.load_shipped("smolm2-135m")
    Traceback (most recent call last):
    ...
    subclone_viz.errors.UnknownNameError: no shipped figures named 'smolm2-135m' (did you mean 'smollm2-135m'?); ...
"""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import __version__
from ._atomic import DamagedFileError
from .errors import UnknownNameError
from .evaluate import BlockAblation
from .profile import Profile
from .records import Record, register_record

if TYPE_CHECKING:
    from .parent import Parent

DATA = Path(__file__).parent / "shipped_data"
# What the notebooks measure in full mode: text_batches(...) arguments and token counts.
PROFILE_BATCHES = {"seq_len": 128, "batch_size": 8}
PROFILE_TOKENS = 8192
ABLATION_BATCHES = {"seq_len": 128, "batch_size": 4, "max_batches": 1}
SIZE_BUDGET = 2_000_000  # bytes of profile per parent; past it the per-shard sums are left out


@register_record
@dataclass
class ShippedFigures(Record):
    """A shipped parent's block ablation, the digest of its profile file and how both were made."""

    FORMAT = "subclone_viz.shipped_figures"
    VERSION = 1

    parent: str
    made: dict[str, Any]  # command, profile (its text), ablation (its text), date, version, seconds
    ablation: BlockAblation
    profile_file: str  # beside this record
    profile_sha256: str
    profile: Profile | None = field(default=None, compare=False)  # filled by load_shipped

    def to_dict(self) -> dict[str, Any]:
        return {
            "parent": self.parent,
            "made": self.made,
            "ablation": self.ablation.to_dict(),
            "profile_file": self.profile_file,
            "profile_sha256": self.profile_sha256,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ShippedFigures":
        made, ablation = data["made"], data["ablation"]
        if not isinstance(made, dict) or not {"command", "profile", "ablation", "date", "version"} <= made.keys():
            raise ValueError("'made' must say the command, profile, ablation, date and version it was made with")
        if not isinstance(ablation, dict):
            raise ValueError(f"'ablation' must be an object, not {type(ablation).__name__}")
        removed, duplicated = ablation["removed"], ablation["duplicated"]
        values = (
            [ablation["baseline"], *removed, *duplicated]
            if isinstance(removed, list) and isinstance(duplicated, list)
            else None
        )
        if values is None or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise ValueError("'ablation' needs a finite baseline and lists of finite 'removed' and 'duplicated' losses")
        if len(removed) != len(duplicated) or not removed:
            raise ValueError(
                f"'ablation' has {len(removed)} removed and {len(duplicated)} duplicated losses: one of each per block"
            )
        name, digest = data["profile_file"], data["profile_sha256"]
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9._-]+\.npz", name):
            raise ValueError(f"'profile_file' must be a plain .npz file name beside the record, not {name!r}")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"'profile_sha256' must be 64 hex digits, not {digest!r}")
        parent = data["parent"]
        if not isinstance(parent, str) or not parent:
            raise ValueError(f"'parent' must name the parent, not {parent!r}")
        return cls(
            parent=parent,
            made=made,
            profile_file=name,
            profile_sha256=digest,
            ablation=BlockAblation(
                float(ablation["baseline"]), [float(v) for v in removed], [float(v) for v in duplicated]
            ),
        )

    def describe(self) -> str:
        """One sentence for a notebook: what was measured, on what text, when and how to make it again."""
        made = self.made
        return (
            f"shipped with subclone_viz: profile of {made['profile']}, block ablation on {made['ablation']}; "
            f"made on {made['date']} by `{made['command']}` (subclone_viz {made['version']})"
        )


def available() -> list[str]:
    """The parents whose figures ship with this package."""
    return sorted(path.stem for path in DATA.glob("*.json"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_shipped(name: str, directory: str | Path = DATA) -> ShippedFigures:
    """The shipped figures of the embedded parent ``name`` (``.profile`` and ``.ablation``), validated.

    Args:
        name: an embedded parent, one of :func:`available`.
        directory: where to read them (the package's own by default).
    """
    directory = Path(directory)
    path = directory / f"{name}.json"
    # Something else in the record's place (a directory) is named by ShippedFigures.load, not taken for no name.
    if not isinstance(name, str) or "/" in name or not path.exists():
        names = sorted(p.stem for p in directory.glob("*.json"))
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownNameError(f"no shipped figures named {name!r}{hint}; shipped: {', '.join(names) or 'none'}")
    record = ShippedFigures.load(path)
    profile_path = directory / record.profile_file
    if not profile_path.is_file():
        raise DamagedFileError(f"{path}: its profile {record.profile_file} is missing")
    if _sha256(profile_path) != record.profile_sha256:
        raise DamagedFileError(f"{profile_path} does not match the digest {path} records: it was changed or damaged")
    profile = Profile.load(profile_path)
    if profile.parent["name"] != record.parent or record.parent != name:
        raise DamagedFileError(
            f"{path} is for {record.parent!r}, its profile for {profile.parent['name']!r}, asked for {name!r}"
        )
    if len(record.ablation.removed) != profile.num_layers:
        raise DamagedFileError(
            f"{path}: {len(record.ablation.removed)} ablated blocks, but the parent has {profile.num_layers}"
        )
    return replace(record, profile=profile)


def _compact(profile: Profile) -> Profile:
    """``profile`` as it is when it fits the size budget; otherwise float32 sums without the per-shard copies
    (whose float64 sums must add up to the totals, which float32 rounding would break)."""
    arrays = ("block_sums", "residual_abs_sums", "ffn_abs_sums", "attn_abs_sums")
    size = sum(
        a.nbytes for a in (*(getattr(profile, n) for n in arrays), *profile.stats.values(), *profile.shards.values())
    )
    if size <= SIZE_BUDGET:
        return profile
    return replace(
        profile,
        **{name: getattr(profile, name).astype(np.float32) for name in arrays},
        stats={name: value.astype(np.float32) for name, value in profile.stats.items()},
        shards={},
    )


def save_shipped(
    parent: "Parent",
    profile: Profile,
    ablation: BlockAblation,
    made: dict[str, Any],
    directory: str | Path = DATA,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``parent``'s shipped figures (``tools/make_shipped.py`` calls this) and read them back through
    :func:`load_shipped`; ``made`` says how they were made (the date and version are added)."""
    profile.check_parent(parent)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    profile_path = _compact(profile).save(directory / f"{parent.name}.profile.npz", overwrite=overwrite)
    record = ShippedFigures(
        parent=parent.name,
        ablation=ablation,
        profile_file=profile_path.name,
        profile_sha256=_sha256(profile_path),
        made={**made, "date": _dt.date.today().isoformat(), "version": __version__},
    )
    record_path = record.save(directory / f"{parent.name}.json", overwrite=overwrite)
    load_shipped(parent.name, directory)
    return [profile_path, record_path]


__all__ = ["ShippedFigures", "available", "load_shipped", "save_shipped"]
