"""``train`` and ``retrain``: register a version trained on a data directory, or on it
with the logged decisions and their feedback."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from nextbest.cli.options import (
    DaskOpt,
    DataOpt,
    SinceOpt,
    TrainConfigOpt,
    dask_cluster,
    dask_given_as,
    load_data,
    parse_date,
    read_gate_config,
    read_settings,
    read_train_config,
    refuse_future_since,
)
from nextbest.cli.output import (
    console,
    edits_said,
    fail,
    note,
    stage_steps,
    steps,
    versions_said,
    working,
)
from nextbest.cli.process import interruptible_as_ctrl_c, said_if_stopped
from nextbest.settings import Settings, without_password
from nextbest.wording import plural


def _alias_given_by_training(settings: Any, alias: str | None) -> None:
    """Refuse, before any work, an alias MLflow would refuse when it is set at the end
    (``bad alias!``), and an alias that would serve the new version without the gate:
    a champion given by ``--alias`` skipped the gate and left no record of who
    promoted it and why, and ``rollback`` could not tell. ``champion`` may go to a
    model's first version (nothing is served yet); the served alias, when another
    (NEXTBEST_SERVE_ALIAS), never: training gives it to the first version itself,
    beside ``champion``, and a later version is served once promoted."""
    from nextbest import registry

    if alias is not None and (problem := registry.alias_problem(alias)) is not None:
        raise fail(f"--alias: {problem}")
    champions = {registry.CHAMPION_ALIAS, registry.PREVIOUS_CHAMPION_ALIAS}
    if alias is None or alias not in {*champions, settings.serve_alias}:
        return
    if alias == settings.serve_alias != registry.CHAMPION_ALIAS:
        raise fail(
            f"--alias {alias}: the server reads alias '{alias}' (NEXTBEST_SERVE_ALIAS), so "
            "the new version would be served at once, without the gate; register it under "
            "another alias (--alias NAME), or serve the champion (unset NEXTBEST_SERVE_ALIAS)"
        )
    served = registry.alias_version(settings, settings.serve_alias)
    champion = registry.alias_version(settings, registry.CHAMPION_ALIAS)
    if alias == registry.PREVIOUS_CHAMPION_ALIAS or served is not None or champion is not None:
        raise fail(
            f"--alias {alias}: the served version changes only by `nextbest promote`, "
            "which runs the gate (or is forced with --force) and records the decision "
            "for rollback; train with --alias challenger, then evaluate and promote"
        )


def _refuse_catalog_mismatch(train_config: Any, dataset: Any) -> None:
    """Stop (exit 2) on levers or values naming nothing in the data's catalog, as
    training would, but before the models directory and its stores are made."""
    mismatch = train_config.catalog_mismatch(dataset.catalog)
    if mismatch is not None:
        raise fail(mismatch)


class _Stage:
    """Where a training is in its steps (the last said), for what a signal left."""

    def __init__(self) -> None:
        self.said = "as it started"

    def tracking(self, step: Callable[[str], None], first: str) -> Callable[[str], None]:
        """``step``, noting each stage said, from ``first`` (the steps' stage before
        any is said)."""
        self.said = f"at step '{first}'"

        def tracked(said: str) -> None:
            self.said = f"at step '{said}'"
            step(said)

        return tracked


def _said_if_stopped(command: str, stage: _Stage) -> AbstractContextManager[None]:
    """Say what a training stopped by a signal (Ctrl-C, a scheduler's SIGTERM) left
    before its MLflow run was logged (``stage``: where it was): nothing registered.
    Once the run has started the registry says what it left (a run ended KILLED, a
    version registered or not), and this says nothing more."""
    from rich.markup import escape

    return said_if_stopped(
        lambda how: (
            f"{escape(command)} was stopped ({how}) {escape(stage.said)}, before "
            "it logged an MLflow run: no version was registered; run it again to train"
        )
    )


def _models_dir_usable(settings: Settings) -> None:
    """Create the models directory now, or stop naming it: commands that end by
    writing there (a registered model) must not find out after their work."""
    import tempfile

    from nextbest import registry

    models = settings.resolved_models_dir
    try:
        settings.ensure_dirs()
        # Writable for this user, as the registration at the end writes: a directory
        # made read-only (a read-only mount, `chattr +i`) passes os.access as root.
        for place in (models, models / "artifacts"):
            if place.is_dir():
                with tempfile.TemporaryFile(dir=place):
                    pass
    except OSError as exc:
        raise fail(f"NEXTBEST_MODELS_DIR: cannot use {models}: {exc.strerror or exc}") from None
    try:  # a store moved away from its artifacts' recorded path
        registry.experiment_id(settings)
    except registry.RegistryError as exc:
        raise fail(str(exc)) from None


def train(
    context: typer.Context,
    data: DataOpt,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Learn from history before this date.")
    ] = None,
    config: TrainConfigOpt = None,
    alias: Annotated[
        str | None,
        typer.Option(
            help="Give the new version this alias, e.g. challenger (champion only to a "
            "model's first version: the served one moves by `nextbest promote`)."
        ),
    ] = None,
    dask: DaskOpt = None,
    skip_if_trained: Annotated[
        bool,
        typer.Option(
            "--skip-if-trained",
            help="Train and register nothing when a registered version was trained on "
            "this data with these parameters and code (a job run again): name it, exit 0. "
            "With no champion it trains all the same, for the first champion: a first "
            "training killed before it made its version champion left nothing served, "
            "which a retry must mend (`nextbest models --repair` makes such a version "
            "champion without training).",
        ),
    ] = False,
) -> str:
    """Train preference and uplift models, log the run to MLflow and register a version."""
    settings = read_settings()
    stage = _Stage()
    with _said_if_stopped("train", stage):
        _alias_given_by_training(settings, alias)
        train_config = read_train_config(config)
        cutoff = parse_date(as_of, "--as-of")
        # Said first, the options checked: the training code (sklearn, LightGBM: 2 s and
        # more) is imported once the config line is out, not before it.
        import pandas as pd

        from nextbest import registry
        from nextbest.contract.notes import data_notes
        from nextbest.learning.distributed import LOCAL, local_workers, worker_count
        from nextbest.learning.train import train as train_models

        stages = [
            "load",
            "features",
            "models",
            "snapshot",
            "evaluation",
            "register",
        ]
        # The code that trains, read once as it begins: checked by --skip-if-trained and
        # recorded by the run, whatever is edited in the checkout while it trains.
        code = registry.training_code()
        unnamed = registry.code_unnamed(code) if skip_if_trained else None
        as_of_stamp = pd.Timestamp(cutoff) if cutoff else None
        # Taken once: by the check of --skip-if-trained, then kept by the training.
        fingerprint: str | None = None
        skip_notes: list[str] = []  # what --skip-if-trained says of a run it trains

        def look(dataset: Any, workers: int | None) -> None:
            nonlocal fingerprint
            fingerprint = dataset.fingerprint()
            why = _stop_if_trained(
                settings,
                dataset,
                fingerprint=fingerprint,
                config=train_config,
                as_of=as_of_stamp,
                workers=workers,
                alias=alias,
                code=code,
            )
            if why is not None:
                skip_notes.append(why)

        try:
            with steps() as progress:
                step, steps_done = stage_steps(progress, "load", len(stages))
                step = stage.tracking(step, "load")

                def load() -> Any:
                    # Once the options and the data are checked (a typo in either creates
                    # nothing), and here, not at the last step after all the work.
                    dataset = load_data(data)
                    _refuse_catalog_mismatch(train_config, dataset)
                    _models_dir_usable(settings)
                    if skip_if_trained and unnamed is None and dask in (None, LOCAL):
                        # A cluster of this machine has a worker per core (connect): known
                        # before it starts, so a run skipped does not start one.
                        look(dataset, None if dask is None else local_workers())
                    return dataset

                with dask_cluster(dask, load, given_as=dask_given_as(context)) as (dataset, client):
                    if skip_if_trained and unnamed is None and dask not in (None, LOCAL):
                        # A running cluster's workers are known once it is reached.
                        look(dataset, worker_count(client))
                    try:
                        result = train_models(
                            dataset,
                            config=train_config,
                            as_of=as_of_stamp,
                            progress=step,
                            client=client,
                            fingerprint=fingerprint,
                            code=code,
                        )
                    except ValueError as exc:
                        raise fail(str(exc)) from None
                result.notes.extend(data_notes(dataset))
                step("register")
                try:
                    # A training run or a first champion's decision run caught by a signal
                    # ends KILLED, saying so (see promote).
                    with interruptible_as_ctrl_c():
                        info = registry.log_training_run(result, settings, alias=alias)
                except (registry.AliasNotMovedError, registry.DecisionUnfinishedError) as exc:
                    raise fail(str(exc)) from None
                steps_done()
        except _AlreadyTrainedError as before:
            return _say_trained_before(settings, before.versions, alias)
    if unnamed is not None:
        skip_notes.append(
            f"--skip-if-trained: {unnamed}, so no version is known to be trained by this "
            "code: trained"
        )
    result.notes.extend(skip_notes)
    for said in result.notes:
        note(said)
    _note_repeat(settings, info.version)
    _note_serve_alias(settings, info.version, info.aliases)
    table = Table(
        title=f"{info.name} version {info.version}  aliases: {', '.join(info.aliases) or '-'}"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(result.metrics.items()):
        table.add_row(key, f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4f}")
    console.print(table)
    console.print(
        f"tracking: {without_password(settings.resolved_tracking_uri)}  run: {info.run_id}"
    )
    _say_held_out(info.version, result.metrics)
    _say_source_patch(info)
    _say_not_champion(info.not_champion)
    return info.version


class _AlreadyTrainedError(Exception):
    """Raised out of training's steps: ``versions`` were trained as this run would be."""

    def __init__(self, versions: list[str]) -> None:
        super().__init__(versions)
        self.versions = versions


def _stop_if_trained(
    settings: Settings,
    dataset: Any,
    *,
    fingerprint: str,
    config: Any,
    as_of: Any,
    workers: int | None,
    alias: str | None,
    code: Any,
) -> str | None:
    """Raise :class:`_AlreadyTrainedError` when a registered version was trained on
    ``dataset`` (its ``fingerprint``) with the params this run would log (``config``,
    ``as_of``, ``workers``: its Dask workers, None without a cluster) by this code
    (``code``: :func:`nextbest.registry.training_code`, read as the training began): a
    job run again would register it again. Unless no version is champion and this
    run's would be made the first (``alias`` none or champion): a first training
    killed before it made its version champion left nothing served, and its retry
    serves one. Then what to say of the run: why it trains all the same."""
    from nextbest import registry
    from nextbest.learning.train import asked_params

    try:
        asked = asked_params(dataset, config=config, as_of=as_of, workers=workers)
    except ValueError as exc:  # an --as-of before the data: said as training says it
        raise fail(str(exc)) from None
    same = registry.trained_as(settings, fingerprint=fingerprint, asked=asked, code=code)
    if not same:
        return _why_not_skipped(
            registry.trained_otherwise(settings, fingerprint=fingerprint, asked=asked, code=code)
        )
    if alias not in (None, registry.CHAMPION_ALIAS) or registry.alias_version(
        settings, registry.CHAMPION_ALIAS
    ):
        raise _AlreadyTrainedError(same)
    said = (
        f"--skip-if-trained: {versions_said(same)} trained on this data with these "
        "parameters and code, but no version is champion, so none is served: trained, "
        "for a first champion"
    )
    try:
        stopped = [
            v.version
            for v in registry.list_versions(settings)
            if v.version in same and v.alias_unset == registry.CHAMPION_ALIAS
        ]
    except registry.RegistryError:  # what `nextbest models` would say: not this run's
        stopped = []
    if stopped:
        said += (
            f"; version {stopped[0]} was registered in full as the first champion by a "
            "training stopped before it set the alias: `nextbest models --repair` makes "
            "such a version champion without training"
        )
    return said


def _why_not_skipped(others: list[tuple[str, list[str]]]) -> str:
    """What --skip-if-trained says of a run it trains because no version was trained
    as it would be (``others``: :func:`nextbest.registry.trained_otherwise`): a job run
    from another directory (other config files, no levers) or after an edit trained
    again, and only a look into every run's params said why."""
    said = "--skip-if-trained: no version was trained on this data with these parameters and code"
    if not others:
        return f"{said}: trained (none on this data)"
    differences = "; ".join(
        f"version {version}: other {', '.join(what)}" for version, what in others[-3:]
    )
    if len(others) > 3:
        differences += f"; {plural(len(others) - 3, 'older version')}"
    return f"{said}: trained (on this data, {differences})"


def _say_trained_before(settings: Settings, versions: list[str], alias: str | None) -> str:
    """Say which versions (with their aliases) a skipped training would have repeated;
    the newest of them."""
    from nextbest import registry

    named = []
    for version in versions:
        aliases = registry.describe_version(settings, version).aliases
        named.append(f"{version} ({', '.join(sorted(aliases))})" if aliases else version)
    console.print(
        f"{versions_said(named)} trained on this data with these parameters and code: "
        "nothing trained" + (f"; --alias {alias} given to no version" if alias is not None else ""),
        highlight=False,
    )
    return versions[-1]


def _say_source_patch(info: Any) -> None:
    """Of a version trained from a checkout with uncommitted edits (``info``: what
    registering it returned), say where its run keeps their patch, or why it has none."""
    said = edits_said(info)
    if said is not None:
        console.print(f"source: {said}", highlight=False)


def _say_not_champion(why: str | None) -> None:
    """Say, last, why the version ``--alias champion`` was asked for did not become
    champion (``why``, None when it did), and exit 1: it is registered in full, and a
    script that goes on as if it were served must not."""
    from rich.markup import escape

    if why is None:
        return
    console.print(
        f"[bold red]--alias champion not given:[/bold red] {escape(why)}",
        highlight=False,
    )
    raise typer.Exit(code=1)


def retrain(
    context: typer.Context,
    data: DataOpt,
    since: SinceOpt = None,
    config: TrainConfigOpt = None,
    alias: Annotated[str, typer.Option(help="Alias for the new version.")] = "challenger",
    gate_config: Annotated[
        Path | None,
        typer.Option(
            "--gate",
            help="Gate config whose evaluation_share is left out of training (default: "
            "training/gate.yaml if there is one here, else the built-in defaults); evaluate "
            "and promote must use the same share.",
        ),
    ] = None,
    dask: DaskOpt = None,
    allow_history_only: Annotated[
        bool,
        typer.Option(
            "--allow-history-only",
            help="Register a version even when the recommendation log holds no decision "
            "with an outcome (since --since) to learn from: a model of the history alone "
            "(refused without this, exit code 2).",
        ),
    ] = False,
) -> str:
    """Train on history + logged recommendations with their feedback; register a challenger.

    The share of logged decisions the gate evaluates on (`evaluation_share` in
    training/gate.yaml) is never trained on.
    """
    settings = read_settings()
    stage = _Stage()
    with _said_if_stopped("retrain", stage):
        # The options checked and the config said first; then importing MLflow and the
        # training code (3 s and more), with a spinner on a terminal, and the steps. (Done
        # the other way round, a log got its first line after 7 s.)
        _alias_given_by_training(settings, alias)
        train_config = read_train_config(config)
        gate = read_gate_config(gate_config)
        start = parse_date(since, "--since")
        with working("retrain: loading MLflow and the training code", logged=False):
            from nextbest import registry
            from nextbest.contract import ContractError
            from nextbest.contract.notes import data_notes
            from nextbest.loop.retrain import retrain as run_retrain
        refuse_future_since(
            start,
            since,
            f"no logged decision is that new, and the '{alias}' alias would go to a model "
            "of the history alone; leave it out to use all the feedback",
        )
        stages = ["load", "feedback", "features", "models", "snapshot", "evaluation", "register"]
        with steps() as progress:
            step, steps_done = stage_steps(progress, "load", len(stages))
            step = stage.tracking(step, "load")
            code = registry.training_code()  # the code that trains, read once as it begins

            def load() -> Any:
                dataset = load_data(data)
                _refuse_catalog_mismatch(train_config, dataset)
                # Once the options and data are checked: a typo makes nothing.
                _models_dir_usable(settings)
                return dataset

            # The data is read, then the logged decisions and their feedback, then
            # training's steps.
            with dask_cluster(dask, load, given_as=dask_given_as(context)) as (dataset, client):
                try:
                    # A scheduler's SIGTERM stops it as Ctrl-C does: a training run caught
                    # logging ends KILLED, saying so, not RUNNING.
                    with interruptible_as_ctrl_c():
                        outcome = run_retrain(
                            settings,
                            dataset=dataset,
                            config=train_config,
                            since=start,
                            alias=alias,
                            gate=gate,
                            progress=step,
                            client=client,
                            data_notes=data_notes(dataset),
                            allow_history_only=allow_history_only,
                            code=code,
                        )
                except (ValueError, ContractError) as exc:
                    raise fail(str(exc)) from None
            steps_done()
    for said in outcome.result.notes:
        if said not in outcome.warnings:  # printed last, where they are read
            note(said)
    given = "" if outcome.not_champion else f" as '{alias}'"
    console.print(
        f"registered {settings.model_name} version {outcome.version}{given} (run {outcome.run_id})"
    )
    _say_held_out(outcome.version, outcome.result.metrics)
    _note_repeat(settings, outcome.version)
    registered = registry.describe_version(settings, outcome.version)
    _note_serve_alias(settings, outcome.version, registered.aliases)
    if outcome.registered is not None:
        _say_source_patch(outcome.registered)
    for warning in outcome.warnings:
        console.print(f"[bold red]{warning}[/bold red]", highlight=False)
    _say_not_champion(outcome.not_champion)
    return outcome.version


def _say_held_out(version: str, metrics: dict[str, float]) -> None:
    """The figures a data scientist looks for first, in one line under the version
    registered (``metrics``: its training run's): engagement AUC and the policy
    value by DR on its held-out slice, and whether the learned policy adds anything
    over the logged policy and over doing nothing there. train printed them only
    among sixty rows of metrics, and retrain not at all."""
    from nextbest.evaluation.plots import gains_said

    said = [f"AUC {metrics['eval_auc']:.3f}"] if "eval_auc" in metrics else []
    if "ope_dr_policy_value" in metrics:
        said.append(
            "policy value (DR) {:.3f} [{:.3f}, {:.3f}]".format(
                *(metrics[f"ope_dr_{key}"] for key in ("policy_value", "ci_low", "ci_high"))
            )
        )
    said += gains_said(metrics, "dr")
    if not said:
        return
    decisions = metrics.get("eval_decisions")
    where = f" ({plural(int(decisions), 'decision')})" if decisions else ""
    console.print(
        f"version {version} on its held-out slice{where}: {'; '.join(said)}", highlight=False
    )


def _note_serve_alias(settings: Settings, version: str, aliases: tuple[str, ...]) -> None:
    """Say, of a version just registered, which alias the server reads when that is
    another (NEXTBEST_SERVE_ALIAS): promote and rollback move ``champion`` only, and
    training gives the served alias to a model's first version only."""
    from nextbest import registry

    served_as = settings.serve_alias
    if served_as == registry.CHAMPION_ALIAS:
        return
    served = version if served_as in aliases else registry.alias_version(settings, served_as)
    if served is None:
        note(
            f"the server reads alias '{served_as}' (NEXTBEST_SERVE_ALIAS), which names no "
            f"version: version {version} is not served. Training gives that alias to a "
            "model's first version only; a later one is served once `nextbest promote` "
            f"makes it champion and '{served_as}' is moved to it in the registry"
        )
        return
    if registry.CHAMPION_ALIAS not in aliases:
        return
    note(
        f"version {version} is the champion, and the server reads alias '{served_as}' "
        f"(NEXTBEST_SERVE_ALIAS), which names version {served}"
        + (", given it too so that it is served" if served == version else "")
        + f": `nextbest promote` and `rollback` move '{registry.CHAMPION_ALIAS}' only, so "
        f"a server reading '{served_as}' keeps version {served} until that alias is moved "
        f"in the registry (or it reads '{registry.CHAMPION_ALIAS}', the default)"
    )


def _note_repeat(settings: Settings, version: str) -> None:
    """Say when ``version`` repeats an older one (same data, parameters and code)."""
    from nextbest import registry

    same = registry.same_training(settings, version)
    if same:
        listed = ", ".join(same)
        console.print(
            f"[yellow]note:[/yellow] version {version} was trained on the same data with the "
            f"same parameters and code as version{'s' if len(same) > 1 else ''} {listed} (a "
            "job run twice?): the same model, registered again",
            highlight=False,
        )
