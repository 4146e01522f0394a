"""``simulate`` and ``validate``: a synthetic world, and a data directory checked against
the data contract."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from nextbest.cli.options import (
    DataOpt,
    TrainConfigOpt,
    data_dir,
    load_data,
    path_error,
    read_train_config,
)
from nextbest.cli.output import fail, note, plural, stdout, working


def simulate(
    out: Annotated[Path, typer.Option(help="Directory to write the world into.")],
    hcps: Annotated[int, typer.Option(min=1, help="Number of HCPs.")] = 2000,
    periods: Annotated[int, typer.Option(min=1, help="Weekly decision periods.")] = 26,
    seed: Annotated[int, typer.Option(min=0, help="Random seed (same seed, same files).")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    replace: Annotated[
        bool,
        typer.Option(
            "--replace",
            help="Replace the files of another world in --out (without it they are kept "
            "and nothing is written; the same world simulated again is kept as it is).",
        ),
    ] = False,
) -> Path:
    """Build a synthetic HCP world with known ground truth."""
    from nextbest.simulate import WorldExistsError, refuse_another_world, simulate_world
    from nextbest.yamlfile import near_hint

    if fmt not in (formats := ("csv", "parquet")):
        raise fail(
            f"--format must be csv or parquet, got '{fmt}'{near_hint(fmt, formats, any_case=True)}"
        )
    kind: Literal["csv", "parquet"] = "csv" if fmt == "csv" else "parquet"
    try:
        if not replace:
            # Before the simulation: another world in --out was found only once the
            # whole world had been simulated and written beside it.
            refuse_another_world(out, kind, n_hcps=hcps, periods=periods, seed=seed)
        with working(f"simulating {plural(hcps, 'HCP')} x {plural(periods, 'period')}"):
            world = simulate_world(n_hcps=hcps, periods=periods, seed=seed)
            world.write(out, fmt=kind, replace=replace)
    except WorldExistsError as exc:
        them = "it" if len(exc.names) == 1 else "them"
        said = f"{exc}; give --replace to replace {them}, or another --out"
        raise fail(f"--out: {said}") from None
    except OSError as exc:  # a clash of formats, or a directory that cannot be written
        said = path_error(exc) if exc.filename is not None else str(exc)
        raise fail(f"--out: {said}") from None
    stdout.print(
        f"wrote {plural(len(world.hcps), 'HCP')}, {plural(len(world.catalog), 'action')}, "
        f"{plural(len(world.interactions), 'decision')} and the ground truth to {out}"
    )
    return out


def validate(data: DataOpt, config: TrainConfigOpt = None) -> None:
    """Check a data directory against the data contract."""
    from nextbest.contract.notes import consent_blank_notes, data_notes
    from nextbest.learning.readiness import (
        evidence_notes,
        fitted_by_training,
        interaction_notes,
        what_training_gets,
        why_training_stops,
    )

    # What training will get is counted with the config `train` would read.
    train_config = read_train_config(config)
    # A history of millions of rows takes a minute or more to read, check and count
    # (5 million: 50 s to read a CSV, half a minute to count): said while it is done.
    data_dir(data)  # a typo is said before any reading is announced
    with working(f"reading and checking the files in {data}"):
        dataset = load_data(data)
        # The files keep the contract, but a pipeline gating on validate must not pass
        # data train refuses: the same exit code as a broken contract, said last (where
        # it is read) and not announced as "ok" first.
        eval_fraction = train_config.eval_fraction
        # Which decisions training fits: one count, over a second at 5 million rows.
        fit = fitted_by_training(dataset.interactions, eval_fraction, dataset.catalog)
        stops = why_training_stops(dataset.interactions, eval_fraction, dataset.catalog, fit=fit)
        if stops is not None:
            stops = f"train would stop on these data: {stops}"
        elif (mismatch := train_config.catalog_mismatch(dataset.catalog)) is not None:
            stops = f"train would stop on this config and catalog: {mismatch}"
        gets = what_training_gets(dataset.interactions, eval_fraction, dataset.catalog, fit=fit)
        # What `train --data` records as the version's data_fingerprint (`nextbest
        # models --json`): archived files are shown to be a version's without training.
        fingerprint = dataset.fingerprint()
        notes = [
            *consent_blank_notes(dataset),
            *data_notes(dataset),
            *evidence_notes(dataset, eval_fraction, fit=fit),
            *interaction_notes(dataset.interactions, dataset.catalog),
        ]
    said = "[green]ok[/green]" if stops is None else "the files keep the contract, but"
    stdout.print(
        f"{said}: {plural(len(dataset.hcps), 'HCP')}, {plural(len(dataset.catalog), 'action')}, "
        f"{plural(len(dataset.interactions), 'interaction')}"
    )
    for line in gets:
        stdout.print(f"  {line}", highlight=False)
    stdout.print(f"  data fingerprint {fingerprint}", highlight=False)
    for line in notes:
        note(line, out=stdout, indent="  ")
    if stops is not None:
        raise fail(stops)
