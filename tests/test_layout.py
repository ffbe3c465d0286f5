"""The shape of the code: one import package, imports that point one way, each word of the vocabulary declared
once, one typed run record whose typos fail and whose identity follows RunConfig."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from resnet_study.core.config import RunConfig
from resnet_study.core.records import RunRecord, TABLES, sql_columns
from tests.helpers import ROOT

PACKAGES = ("core", "jobs", "results_api")  # folders -> resnet_study.<folder>
LAYER = {"core": 0, "results_api": 1, "jobs": 2}  # an import may only point to the same or a lower layer


def modules() -> dict[str, Path]:
    return {"resnet_study." + ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
            for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported project module, line, inside a function?) for every import statement of the module."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out = []
    funcs = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for t in targets:
            top = t.split(".")[0]
            assert top not in PACKAGES, f"{path}:{node.lineno}: absolute import of {t}: use resnet_study.{t}"
            if t in known:
                out.append((t, node.lineno, id(node) in funcs))
    return out


def test_imports_point_one_way_and_never_loop():
    mods = modules()
    graph = {name: imports_of(name, path, set(mods)) for name, path in mods.items()}
    for name, edges in graph.items():
        for target, line, _ in edges:
            a, b = name.split(".")[1], target.split(".")[1]
            assert LAYER[b] <= LAYER[a], f"{mods[name]}:{line}: {a} imports {b} ({target})"
    # no cycle among modules, counting imports inside functions too (an import hidden in a function to dodge a
    # cycle is still a cycle)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target, line, _ in graph[node]:
            if target == node or target == node.rpartition(".")[0]:
                continue  # a module importing its own package's __init__ (StudyError) is not a loop
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [node, target]))
            if state.get(target) is None:
                visit(target, path + [node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_the_installed_package_is_resnet_study_only():
    import resnet_study.core
    import resnet_study.jobs
    import resnet_study.results_api

    for pkg in (resnet_study.core, resnet_study.jobs, resnet_study.results_api):
        assert Path(pkg.__file__).parent.parent == ROOT  # the folders of this checkout, mapped
    text = (ROOT / "pyproject.toml").read_text()
    assert 'pythonpath' not in text and '"resnet_study.core" = "core"' in text


def test_the_command_line_starts_without_the_heavy_libraries():
    """Every `resnet-study` command imports jobs.cli first: torch, scipy, FastAPI, httpx and matplotlib load only in
    the commands that use them (they took `resnet-study --help` from 0.7 s to 2.5 s, and every command of a sweep, a
    pod's retry, a test, paid it). A real interpreter, so nothing this test process already imported counts."""
    heavy = ("torch", "scipy", "fastapi", "httpx", "matplotlib", "statsmodels")
    code = ("import sys; import resnet_study.jobs.cli; "
            f"print(' '.join(m for m in {heavy!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == [], f"importing the CLI loads {loaded}: import them inside the commands that need them"


# ---------------------------------------------------------------- each word declared once, however it is spelt

def _vocabulary() -> dict[str, frozenset]:
    from resnet_study.core import datasets, vocab
    from resnet_study.results_api import figures

    words = {"data sets": vocab.DATASETS, "shortcuts": vocab.SHORTCUTS, "augmentation presets": vocab.AUGMENTS,
             "devices": vocab.DEVICES, "precisions": vocab.PRECISIONS, "run statuses": vocab.STATUSES,
             "figure names": tuple(figures.FIGURES)}
    words |= {f"class names of {d}": spec.classes for d, spec in datasets.BUILTINS.items()}
    return {what: frozenset(values) for what, values in words.items()}


# Where a word's values are declared, and the lookup tables keyed by them (their keys are held to the vocabulary by
# test_lookup_tables_are_keyed_by_the_vocabulary): nowhere else may the same set of values be written out.
HOMES = {"core/vocab.py": None, "core/datasets.py": None, "results_api/figures.py": {"figure names"}, "core/augment.py": {"augmentation presets"},
         "core/data.py": {"data sets"}, "core/classic.py": {"augmentation presets"}}


def _literal_sets(tree: ast.AST):
    """(line, values) of every literal collection of constants in the source: tuples, lists, sets, a dict's keys,
    and Literal[...] arguments, whatever their quoting, spacing or order."""
    for node in ast.walk(tree):
        elements = None
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            elements = node.elts
        elif isinstance(node, ast.Dict):
            elements = [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Subscript) and getattr(node.value, "id", getattr(node.value, "attr", "")) == "Literal":
            elements = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if elements and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elements):
            yield node.lineno, frozenset(e.value for e in elements)


def _six_n_plus_two(tree: ast.AST):
    """Lines that compute 6n+2 (or undo it, (layers - 2) / 6), in any order of the operands."""
    def const(node, value):
        return isinstance(node, ast.Constant) and node.value == value

    def times_six(node):
        return isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) and (const(node.left, 6) or
                                                                                  const(node.right, 6))
    for node in ast.walk(tree):
        if not isinstance(node, ast.BinOp):
            continue
        if isinstance(node.op, ast.Add) and ((times_six(node.left) and const(node.right, 2)) or
                                             (times_six(node.right) and const(node.left, 2))):
            yield node.lineno
        if isinstance(node.op, (ast.Div, ast.FloorDiv)) and const(node.right, 6) and isinstance(node.left, ast.BinOp) \
                and isinstance(node.left.op, ast.Sub) and const(node.left.right, 2):
            yield node.lineno


def test_each_word_is_declared_once_however_it_is_spelt():
    vocabulary = _vocabulary()
    found = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            where = str(path.relative_to(ROOT))
            tree = ast.parse(path.read_text())
            for line, values in _literal_sets(tree):
                for what, words in vocabulary.items():
                    allowed = where in HOMES and (HOMES[where] is None or what in HOMES[where])
                    if values == words and not allowed:
                        found.append(f"{where}:{line}: the {what} written out again")
            found += [f"{where}:{line}: 6n+2 computed again" for line in _six_n_plus_two(tree)
                      if where != "core/vocab.py"]
    assert found == [], found


def test_the_checks_find_a_restatement_in_any_spelling():
    """The two checks above, on planted code: they must see through quoting, order, spacing and form."""
    planted = ast.parse("X = ('svhn', 'fashion-mnist', 'mnist',   'cifar100', 'cifar10')\nY = {'none': 1, 'A': 2, 'B': 3}\nZ: Literal['cpu', "
                        "'auto', 'cuda']\ndef f(k): return 2 + k * 6\ndef g(layers): return (layers - 2) // 6\n")
    sets = {values for _, values in _literal_sets(planted)}
    vocabulary = _vocabulary()
    assert {vocabulary["data sets"], vocabulary["shortcuts"], vocabulary["devices"]} <= sets
    assert list(_six_n_plus_two(planted)) == [4, 5]


def test_lookup_tables_are_keyed_by_the_vocabulary():
    from resnet_study.core import augment, classic, data, datasets, vocab

    assert tuple(augment.PRESETS) == vocab.AUGMENTS and tuple(classic.CLASSIC_PRESETS) == vocab.AUGMENTS
    assert set(data.READERS) == {s.loader for s in datasets.BUILTINS.values()} | {"arrays"}  # "arrays": user data
    assert tuple(datasets.BUILTINS) == vocab.DATASETS


def test_percent_names_carry_pct_and_fractions_never_do():
    """SQL aliases that multiply by 100 name a percentage; nothing called test_error holds one."""
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            for m in re.finditer(r"\*\s*100\s+AS\s+(\w+)|100\s*\*\s*[\w.()]+\)?\s+AS\s+(\w+)", p.read_text()):
                alias = m.group(1) or m.group(2)
                assert "_pct" in alias, f"{p}: {m.group(0)}"


def test_a_misspelt_record_field_fails_at_once():
    with pytest.raises(pydantic.ValidationError, match="test_eror"):
        RunRecord(run_id="r", test_eror=0.1)
    record = RunRecord(run_id="r")
    with pytest.raises(ValueError, match="test_eror"):
        record.test_eror = 0.1
    with pytest.raises(pydantic.ValidationError):
        record.epochs_done = "many"


def test_the_schema_is_the_records():
    assert TABLES["runs"] == sql_columns(RunRecord)
    config_fields = set(RunConfig.model_fields)
    assert config_fields <= set(TABLES["runs"])  # every config field is a column, with its own type
    assert TABLES["runs"]["milestones"] == "BIGINT[]" and TABLES["runs"]["shortcut"] == "VARCHAR"
    assert TABLES["runs"]["device_type"] == TABLES["runs"]["device_name"] == "VARCHAR" and "device" not in TABLES["runs"]
    assert TABLES["runs"]["train_limit"] == "BIGINT" and TABLES["runs"]["started_at"] == "TIMESTAMP"


def test_identity_is_every_config_field_unless_marked():
    assert RunConfig.identity_fields() == tuple(RunConfig.model_fields)

    class WithMomentumSchedule(RunConfig):  # a field a later version might add
        nesterov: bool = False

    class WithNote(RunConfig):
        note: str = pydantic.Field("", json_schema_extra={"identity": False})

    base = RunConfig(n=3)
    assert WithMomentumSchedule(n=3, nesterov=True).run_id != base.run_id  # a new field changes the id
    assert WithNote(n=3, note="x").run_id == base.run_id  # unless it is marked as not identity
    assert "seed" not in RunConfig.cell_fields() and "run_name" not in RunConfig.cell_fields()
    assert set(RunConfig.cell_fields()) | {"seed", "run_name"} == set(RunConfig.identity_fields())


def test_run_ids_of_an_old_store_are_found_again(old_store):
    """The same config gives the same id as 0.1.0 gave it: an old run resumes and is never trained twice."""
    from resnet_study.core import store

    for folder in sorted((old_store / "runs").iterdir()):
        shard = store.read_shard(store.results_location(old_store), folder.name)
        assert RunConfig.model_validate_json(shard.run.config).run_id == folder.name


@pytest.mark.parametrize("pkg", PACKAGES)
def test_each_module_map_lists_exactly_the_files_there(pkg):
    """The map in each subpackage's docstring (`    name.py  what it is`) names every module, folder and shipped
    spec there, and nothing that is not."""
    import importlib

    doc = importlib.import_module(f"resnet_study.{pkg}").__doc__
    listed = set(re.findall(r"^ {4}([\w*]+\.(?:py|yaml)|\w+/)", doc, re.M))
    folder = ROOT / pkg
    present = {p.name for p in folder.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    present |= {f"{p.name}/" for p in folder.iterdir() if p.is_dir() and p.name != "__pycache__"}
    present |= {"*.yaml"} if any(folder.glob("*.yaml")) else set()
    assert listed == present, (sorted(listed - present), sorted(present - listed))


def test_each_environment_variable_is_declared_once():
    """Every RESNET_STUDY_* variable is named in core/settings.py alone; the code elsewhere says settings.X.name
    (a string literal that starts with the prefix anywhere else is a second declaration)."""
    from resnet_study.core import settings

    found = []
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            if path == ROOT / "core" / "settings.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                        and node.value.startswith("RESNET_STUDY_"):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value}")
    assert found == [], found
    names = [v.name for v in settings.ALL]
    assert len(set(names)) == len(names) and all(n.startswith("RESNET_STUDY_") for n in names)
    declared = {v for v in vars(settings).values() if isinstance(v, settings.EnvVar)}
    assert declared == set(settings.ALL), "a variable in core/settings.py is missing from ALL"
