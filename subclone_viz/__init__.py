"""subclone_viz: weight subcloning of transformers, with the plots and widgets to see why it works.

Start a small transformer from the weights of a larger pretrained one (Samragh et al., 2023): profile the
parent, plan which layers, channels, neurons and heads to keep, slice them out, save an ordinary checkpoint
and train it several times faster than from random initialization.

Example::

    >>> import subclone_viz as sv
    >>> parent = sv.load_parent("smollm2-135m")
    >>> batches = sv.text_batches("builtin", parent.tokenizer, seq_len=64, batch_size=4, split="heldout")
    >>> prof = sv.profile(parent, batches, max_tokens=512, progress=False)   # 8,192 tokens or more for real use
    >>> plan = sv.plan(parent, prof, sv.DestinationSpec(layers=6, hidden=192))
    >>> destination = sv.subclone(parent, plan)
    >>> sv.save_destination(destination, plan, "smollm2-6x192")
    PosixPath('smollm2-6x192')
"""

__version__ = "0.1.0"

from .data import cache_dir, image_batches, text_batches  # noqa: E402
from .families import Dims, UnsupportedArchitectureError, family_of, supported_families  # noqa: E402
from .parent import Parent, ParentLoadError, load_parent  # noqa: E402
from .profile import Profile, ProfileMismatchError, RankConsistency, add_taylor, profile  # noqa: E402
from .importance import ESTIMATORS, Importance, estimate_importance  # noqa: E402
from .plan import DestinationSpec, SpecError, SubclonePlan, plan, spec_choices  # noqa: E402
from .subclone import subclone  # noqa: E402
from .evaluate import BlockAblation, Evaluation, block_ablation, evaluate  # noqa: E402
from .export import save_destination  # noqa: E402
from .train import History, TrainSettings, train  # noqa: E402
from .compare import Comparison, Speedup, compare, speedup  # noqa: E402
from .vision import vit_digits_parent  # noqa: E402
from .sizing import SizeGrid, default_grid_axes, size_grid  # noqa: E402
from .trace import TokenTrace, token_trace  # noqa: E402
from .stability import Stability, stability  # noqa: E402
from .study import SpeedupStudy, speedup_study  # noqa: E402
from .forecast import Forecast, ForecastPrior, LearningCurve, forecast  # noqa: E402
from .budget import BudgetGrid, budget_grid  # noqa: E402
from .workflow import default_destination, parent_batches, quick_mode, random_init  # noqa: E402

__all__ = [
    "DestinationSpec",
    "ESTIMATORS",
    "add_taylor",
    "Importance",
    "Stability",
    "SpeedupStudy",
    "speedup_study",
    "estimate_importance",
    "stability",
    "BlockAblation",
    "Comparison",
    "Dims",
    "Evaluation",
    "History",
    "Parent",
    "ParentLoadError",
    "Profile",
    "ProfileMismatchError",
    "RankConsistency",
    "SpecError",
    "Speedup",
    "SubclonePlan",
    "TrainSettings",
    "UnsupportedArchitectureError",
    "block_ablation",
    "cache_dir",
    "compare",
    "evaluate",
    "family_of",
    "image_batches",
    "load_parent",
    "plan",
    "profile",
    "save_destination",
    "spec_choices",
    "speedup",
    "subclone",
    "supported_families",
    "text_batches",
    "train",
    "vit_digits_parent",
    "SizeGrid",
    "TokenTrace",
    "default_grid_axes",
    "size_grid",
    "token_trace",
    "default_destination",
    "parent_batches",
    "quick_mode",
    "random_init",
    "Forecast",
    "ForecastPrior",
    "LearningCurve",
    "forecast",
    "BudgetGrid",
    "budget_grid",
]
