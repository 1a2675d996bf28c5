"""The package's shape: imports flow one way, functions on the fitting path stay short, the
estimator stays a thin adapter, and the command line starts (and refuses bad input) without torch."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import headstart

PACKAGE = Path(headstart.__file__).parent
# Modules a fit runs through (headstart fit / TransferClassifier.fit), by name prefix.
FITTING_PATH = (
    "headstart.advisor", "headstart.backbones", "headstart.data", "headstart.diagnostics", "headstart.estimator",
    "headstart.features", "headstart.fitted", "headstart.persistence", "headstart.pipeline", "headstart.recipe",
    "headstart.strategies", "headstart.training", "headstart.workflow",
)
MAX_FUNCTION_LINES = 60
MAX_ESTIMATOR_LINES = 250


def module_name(path: Path) -> str:
    parts = ("headstart", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(encoding="utf-8")) for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, tree: ast.Module, known: set[str], is_package: bool) -> set[str]:
    """Every headstart module ``name`` imports, anywhere in the file (function-level imports too)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name if is_package else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{node.module}" if node.module else package
            else:
                base = node.module
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
    return {target for target in found if target in known and target != name}


def import_graph() -> dict[str, set[str]]:
    trees = modules()
    packages = {module_name(p) for p in PACKAGE.rglob("__init__.py")}
    return {name: imported(name, tree, set(trees), name in packages) for name, tree in trees.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"headstart.pipeline", "headstart.fitted", "headstart.estimator"} <= set(graph)
    assert "headstart.fitted" in graph["headstart.persistence"]  # the walk sees real edges...
    assert "headstart.estimator" not in graph["headstart.persistence"]  # ...and persistence reads the record only
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_functions_on_the_fitting_path_are_short():
    long = []
    for name, tree in modules().items():
        if not name.startswith(FITTING_PATH):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long


def test_the_estimator_is_a_thin_adapter():
    tree = modules()["headstart.estimator"]
    (cls,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "TransferClassifier"]
    assert cls.end_lineno - cls.lineno + 1 < MAX_ESTIMATOR_LINES


def test_the_command_line_starts_without_torch():
    probe = (
        "import sys\n"
        "from headstart.cli import main\n"
        "for argv in (['--help'], ['fit'], ['fit', 'data', '-o', 'run', '--strategy', 'nope']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit:\n"
        "        assert exit.code in (0, 2), exit.code\n"
        "print(sorted(m for m in ('torch', 'numpy', 'sklearn', 'PIL') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert "invalid choice: 'nope'" in done.stderr


def test_bad_data_and_run_folders_are_refused_before_torch_loads(tmp_path):
    """The images are found (NumPy and Pillow only) and a run's model.json read before PyTorch
    loads, so a folder with a one-image class, no class folders, a run folder that is none, labels
    the model does not know, or an output folder holding other files is refused in a fraction of a
    second, not after PyTorch (or --nproc's N processes) started."""
    from PIL import Image

    from headstart.persistence import FORMAT, FORMAT_VERSION, META_FILE

    for name, count in (("ants", 3), ("bees", 1)):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (40 * i, 90, 20)).save(tmp_path / "data" / name / f"{i}.png")
    (tmp_path / "run").mkdir()  # a run's model.json: what evaluate needs to check the labels
    (tmp_path / "run" / META_FILE).write_text(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "classes": ["ants", "wasps"]}))
    data, flat, image = str(tmp_path / "data"), str(tmp_path / "data" / "ants"), str(tmp_path / "data" / "ants" / "0.png")
    tiny_class = "error: class(es) bees have fewer than 2 images; add images or remove those classes."
    cases = [
        (["fit", data, "-o", "run"], tiny_class),
        (["advise", data], tiny_class),
        (["fit", data, "-o", "run", "--nproc", "2"], tiny_class),
        (["fit", flat, "-o", "run"], f"error: {flat} has no sub-folders"),
        (["fit", flat, "-o", data], f"error: {data} holds ants, bees, which writing a run there would delete"),
        (["evaluate", "no-run", data], "error: no-run does not exist; give the run directory"),
        (["evaluate", "run", data], "error: labels bees are not among the model's classes (ants, wasps)"),
        (["predict", data, image], f"error: {data} is not a headstart model (no model.json)"),
        (["export", "no-run"], "error: no-run does not exist"),
        (["serve", "no-run"], "error: no-run does not exist"),
        (["inspect", "weights", data], f"error: {data} is not a headstart model"),
    ]
    probe = (
        "import sys\n"
        "from headstart.cli import main\n"
        f"for argv in {[argv for argv, _ in cases]!r}:\n"
        "    assert main(argv) == 2, argv\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'sklearn') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    errors = done.stderr.splitlines()
    assert len(errors) == len(cases), done.stderr
    for error, (argv, expected) in zip(errors, cases):
        assert error.startswith(expected), (argv, error)
