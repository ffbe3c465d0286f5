"""The Typer options and output helpers that several commands share (a leaf of jobs: imports only core).

The experiment's options (`train`) and the run options (`train`, `sweep cell`, `sweep local`) are generated from the
fields of core.config.RunConfig and core.config.RunOptions: name, type, default and help come from the
field, so a field added there appears on the command line with no edit here. `run_options_argv` turns a
RunOptions back into the options that make it: the one place an argv is built from it (`sweep local`, a cell split
into processes); `experiment_argv` does the same for a RunConfig (jobs/packing.py)."""

from __future__ import annotations

import csv
import inspect
import json
import os
import sys
import types
import typing
from pathlib import Path
from typing import Optional

import typer
from pydantic import BaseModel, ValidationError

from ..core import StudyError, settings
from ..core.config import RunConfig, RunOptions, parse_seeds
from ..core.store import results_location
from ..core.vocab import check_choice

ResultsDir = typer.Option(None, "--results-dir", envvar=settings.RESULTS.name, show_default="./results",
                          help=RunOptions.model_fields["results_dir"].description)
DataDir = typer.Option(None, "--data-dir", envvar=settings.DATA.name, show_default="./data",
                       help=RunOptions.model_fields["data_dir"].description)
# `bench` takes the device by hand (it has no RunOptions); its help is RunOptions' own.
Device = typer.Option("auto", help=RunOptions.model_fields["device"].description)
TokenFile = typer.Option(None, "--token-file", envvar=settings.API_TOKEN_FILE.name, show_default=False,
                         help="File holding the service's bearer token (a mounted Kubernetes Secret) (default: "
                              f"${settings.API_TOKEN_FILE}, else the token in ${settings.API_TOKEN}).")
ApiUrl = typer.Option(None, "--url", show_default=False,
                      help="Ask a running `resnet-study serve` at this address (e.g. http://localhost:8000) instead "
                           f"of opening a store; its token: ${settings.API_TOKEN} or --token-file.")
FORMATS = ("table", "csv", "json")
Format = typer.Option("table", "--format", help="table, csv or json.")


# ---------------------------------------------------------------- options generated from the config models

# Typer settings a field's type cannot say: environment variables, shown defaults, an option name of its own.
_OPTION_EXTRAS = {
    "results_dir": {"envvar": settings.RESULTS.name, "show_default": "./results"},
    "data_dir": {"envvar": settings.DATA.name, "show_default": "./data"},
    "threads": {"min": 1, "show_default": "the CPUs this process may use"},
}
SEED_OPTIONS = ("seed", "seeds")


def option_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _cli_type(annotation):
    """What Typer parses a field as: Literal choices and lists as text (validated by the model), X | None as X."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return Optional[_cli_type(args[0])]
    if typing.get_origin(annotation) is typing.Literal or typing.get_origin(annotation) is list:
        return str
    return annotation


def _parameter(name: str, field) -> inspect.Parameter:
    default = field.get_default(call_default_factory=True)
    annotation = _cli_type(field.annotation)
    if typing.get_origin(field.annotation) is list:  # milestones: "82,123"
        default, annotation = None, Optional[str]
    decls = [option_name(name)]
    option = typer.Option(default, *decls, help=field.description, **_OPTION_EXTRAS.get(name, {}))
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def experiment_parameters() -> list[inspect.Parameter]:
    """Every RunConfig field as an option, the seed as `--seed S` / `--seeds 0,1,2`."""
    params = [_parameter(name, f) for name, f in RunConfig.model_fields.items() if name != "seed"]
    seed_help = RunConfig.model_fields["seed"].description
    params.insert(5, inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[int],
                                       default=typer.Option(None, min=0, show_default="0", help=seed_help)))
    params.insert(6, inspect.Parameter("seeds", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[str],
                                       default=typer.Option(None, help="Several seeds of the experiment (a cell), "
                                                                       "trained together in this process: 0,1,2 or "
                                                                       "a range such as 0-4.")))
    return params


def run_option_parameters(exclude: tuple[str, ...] = ()) -> list[inspect.Parameter]:
    return [_parameter(name, f) for name, f in RunOptions.model_fields.items() if name not in exclude]


def with_parameters(func, parameters: list[inspect.Parameter]):
    """`func(**values)` as a Typer command whose options are `parameters` (in front of func's own)."""
    own = [p for p in inspect.signature(func).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    func.__signature__ = inspect.Signature(own + parameters)
    func.__annotations__ = {**{p.name: p.annotation for p in own + parameters}}
    return func


def validation_error_line(e: ValidationError, model: type[BaseModel]) -> str:
    """The first pydantic error as `--option: message`, the way the user typed it; a bad choice in the one wording
    every command uses (core.vocab.check_choice)."""
    err = e.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    if not err["loc"]:  # a rule across fields: the message names them
        return msg
    field = str(err["loc"][0])
    if err["type"] == "literal_error":
        choices = typing.get_args(model.model_fields[field].annotation)
        try:
            check_choice(option_name(field), field.replace("_", " "), str(err["input"]), tuple(map(str, choices)))
        except StudyError as choice_error:
            return str(choice_error)
    return f"{option_name(field)}: {msg} (got {err['input']!r})"


def parse_int_list(text: Optional[str], option: str) -> list[int]:
    if not text:
        return []
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise StudyError(f"{option} takes comma-separated epoch numbers, e.g. {option} 82,123 (got {text!r})") from None


def experiments_from(values: dict) -> list[RunConfig]:
    """The runs an invocation of `train` asks for: one per seed (`--seed S`, `--seeds ...`, else seed 0). Pops the
    experiment's values from `values`."""
    seed, seeds = values.pop("seed"), values.pop("seeds")
    fields = {name: values.pop(name) for name in list(values) if name in RunConfig.model_fields}
    if seed is not None and seeds is not None:
        raise StudyError(f"--seed and --seeds both given; write --seeds {seed},... for several seeds, or --seed "
                         f"{seed} alone")
    seed_list = parse_seeds(seeds) if seeds is not None else [seed or 0]
    fields["milestones"] = parse_int_list(fields.get("milestones"), "--milestones")
    try:
        return [RunConfig(**fields, seed=s) for s in seed_list]
    except ValidationError as e:
        raise StudyError(validation_error_line(e, RunConfig)) from None


def run_options_from(values: dict, **fixed) -> RunOptions:
    """RunOptions from a command's option values (unknown keys stay in `values`), plus `fixed` ones."""
    fields = {name: values.pop(name) for name in list(values) if name in RunOptions.model_fields}
    fields.update(fixed)
    try:
        opts = RunOptions(**fields)
    except ValidationError as e:
        raise StudyError(validation_error_line(e, RunOptions)) from None
    return opts.model_copy(update={"results_dir": str(results_location(opts.results_dir))})


def experiment_argv(cfg: RunConfig) -> list[str]:
    """The `train` options that make the run `cfg` again, `--seed` included (fields at their defaults left out): a
    cell split into processes starts its runs with them (jobs/packing.py)."""
    argv = []
    for name, field in RunConfig.model_fields.items():
        value = getattr(cfg, name)
        if name != "seed" and value == field.get_default(call_default_factory=True):
            continue
        if isinstance(value, bool):
            argv.append(option_name(name) if value else "--no-" + option_name(name)[2:])
        else:
            argv += [option_name(name), ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return argv


def run_options_argv(opts: RunOptions, exclude: tuple[str, ...] = ()) -> list[str]:
    """The options that make `opts` again (those that differ from the defaults)."""
    argv = []
    for name, field in RunOptions.model_fields.items():
        value = getattr(opts, name)
        if name in exclude or value == field.get_default():
            continue
        if isinstance(value, bool):
            argv.append(option_name(name))
        else:
            argv += [option_name(name), str(value)]
    return argv


def check_option(option: str, value: Optional[str], choices: tuple[str, ...]) -> None:
    """core.vocab.check_choice for an option that may be left out (None): one wording for every choice error."""
    if value is not None:
        check_choice(option, option.removeprefix("--").replace("-", " "), value, choices)


def print_rows(columns: list[str], rows: list[tuple], fmt: str, title: str | None = None) -> None:
    check_option("--format", fmt, FORMATS)
    if fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(columns)
        w.writerows(rows)
    elif fmt == "json":
        print(json.dumps([dict(zip(columns, r)) for r in rows], default=str, indent=1))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(*columns, title=title)
        for r in rows:
            table.add_row(*("" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in r))
        Console(width=max(120, os.get_terminal_size(0).columns if sys.stdout.isatty() else 200)).print(table)
