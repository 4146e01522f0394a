"""``keys add`` / ``list`` / ``remove``: the API keys file."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from nextbest.cli.options import path_error, read_settings
from nextbest.cli.output import console, fail, minute, note, stdout, width
from nextbest.settings import without_password

KeysFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--file",
        help="Key file (default: NEXTBEST_API_KEYS_FILE, else $NEXTBEST_MODELS_DIR/api_keys.yaml).",
    ),
]


def _keys_file(path: Path | None) -> Path:
    """The key file ``--file`` or the settings name; one under a file stops here (a
    key list read there was empty, and a removal said the key was unknown)."""
    from nextbest.settings import refuse_unusable_place

    target = path if path is not None else read_settings().resolved_api_keys_file
    refuse_unusable_place(target)
    if target.is_dir():
        raise fail(f"the API key file {target} is a directory")
    return target


def _channel_option(help: str) -> Any:
    """``--channel``, given once per channel (not Typer's `<list[str]>`)."""
    return typer.Option("--channel", metavar="CHANNEL", help=help)


# The key entry's fields as `keys add` takes them: its refusals name these.
KEY_OPTIONS = {
    "role": "--role",
    "territory_id": "--territory-id",
    "purpose": "--purpose",
    "channels": "--channel",
}


def keys_add(
    name: Annotated[
        str,
        typer.Argument(
            help="Logged as the requester, e.g. rep-t001; a rep's is its rep_id in URLs "
            "(letters, digits, '.', '_', '-', '@')."
        ),
    ],
    role: Annotated[str, typer.Option("--role", help="admin | channel | rep | monitor")],
    territory_id: Annotated[
        str | None, typer.Option("--territory-id", help="The rep's territory (rep keys).")
    ] = None,
    purpose: Annotated[
        str | None,
        typer.Option(
            "--purpose",
            help="promotional | medical: bind the key to it (its requests default to it, and "
            "asking for the other is refused). Default: promotional for a rep key (an MSL's "
            "says medical); other keys unbound, each request says.",
        ),
    ] = None,
    channels: Annotated[
        list[str] | None,
        _channel_option(
            "Bind a channel key to a channel, e.g. --channel sms (repeat for more): it may "
            "then send feedback and consent for, and get recommendations of, those channels "
            "only. Default: every channel."
        ),
    ] = None,
    replace: Annotated[
        bool,
        typer.Option(
            "--replace", help="Rotate: a new key replaces the one of NAME (stopped at once)."
        ),
    ] = False,
    keep_old: Annotated[
        str | None,
        typer.Option(
            "--keep-old",
            metavar="DURATION",
            help="With --replace: keep accepting the old key as NAME for this long (90m, "
            "24h, 7d; at most 30d) while its clients move to the new one. Only one old key "
            "is kept: one still accepted from an earlier rotation stops at once.",
        ),
    ] = None,
    path: KeysFileOpt = None,
) -> str:
    """Create a key; only its SHA-256 is stored. Running servers accept it at once."""
    from nextbest.service.apikeys import (
        ApiKeyError,
        KeyStore,
        add_key,
        channel_spelling,
        keep_old_duration,
        utc_text,
    )

    overlap = None
    if keep_old is not None:
        if not replace:
            raise fail(
                "--keep-old keeps the old key of a rotation: give it with --replace "
                f"(`nextbest keys add {name} --role {role} --replace --keep-old {keep_old}`)"
            )
        try:
            overlap = keep_old_duration(keep_old)
        except ValueError as exc:
            raise fail(f"--keep-old {exc}") from None
    read_settings()  # an invalid setting stops here, before the key is written
    target = _keys_file(path)
    try:
        added = add_key(
            target,
            name=name,
            role=role,
            territory_id=territory_id,
            purpose=purpose,
            channels=channels or None,
            replace=replace,
            keep_old=overlap,
            given_as=KEY_OPTIONS,
        )
    except (ApiKeyError, OSError) as exc:
        raise fail(str(exc)) from None
    scope = f" for territory {territory_id}" if territory_id else ""
    scope += f", {purpose} requests only" if purpose else ""
    if channels:
        bound = ", ".join(dict.fromkeys(channel_spelling(c) for c in channels))
        scope += f", channels {bound} only"
    if added.ended_until is not None:
        console.print(
            f"the old key '{name}' kept from an earlier rotation (accepted until "
            f"{utc_text(added.ended_until)}) stops working now: an entry keeps one old key",
            highlight=False,
        )
    if added.old_until is not None:
        console.print(
            f"the replaced key of '{name}' is accepted until {utc_text(added.old_until)} "
            f"({keep_old}), then refused; `nextbest_retiring_key_requests_total` counts its "
            "use, `nextbest keys list` shows the time",
            highlight=False,
        )
    elif overlap is not None:
        console.print(f"there was no key '{name}' to keep: nothing replaced", highlight=False)
    console.print(
        f"key '{name}' (role {role}{scope}) {'replaced' if added.replaced else 'added'} in "
        f"{target}; it is shown only now, store it where its user keeps secrets:"
    )
    print(added.key, flush=True)
    if role == "monitor":
        note(
            "a monitor key reads GET /metrics and nothing else: give it to the scraper as a "
            "bearer token (Prometheus: `authorization: {type: Bearer, credentials_file: ...}`)"
        )
    [principal] = [p for p in KeyStore.load(path=target).principals if p.name == name]
    _note_against_served([principal], rep_said="this rep's requests are")
    return added.key


def _note_against_served(principals: list[Any], *, rep_said: str | None = None) -> None:
    """Note what the served model makes of new keys: a rep key's territory where it has
    no HCP, a channel key's channels where its catalog has no action, a purpose its
    content lacks (the keys are added all the same). The registry is read only when
    there is something to check. ``rep_said``: whose requests a territory without HCPs
    refuses (default: the rep keys' of that territory, by name)."""
    from nextbest.service.apikeys import catalog_offers, key_purpose_notes

    reps: dict[str, list[str]] = {}
    for p in principals:
        if p.role == "rep" and p.territory_id:
            reps.setdefault(p.territory_id, []).append(f"'{p.name}'")
    channels = tuple(
        dict.fromkeys(c for p in principals if p.channels is not None for c in p.channels)
    )
    checked = reps or channels or any(p.purpose is not None for p in principals)
    served = _served_model() if checked else None
    if reps:
        unchecked = _note_unserved_territories(
            {
                t: rep_said
                or f"the requests of rep key{'s' * (len(names) > 1)} {', '.join(names)} are"
                for t, names in reps.items()
            },
            model_read=served,
        )
        if unchecked is not None:
            said = f"territory {next(iter(reps))}" if len(reps) == 1 else "the territories"
            note(f"{said} was not checked against the served model: {unchecked}")
    if channels:
        unchecked = _note_unserved_channels(channels, model_read=served)
        if unchecked is not None:
            said = ", ".join(channels)
            note(f"channels {said} were not checked against the served model: {unchecked}")
    if isinstance(served, tuple):
        model, version = served
        for said in key_purpose_notes(principals, catalog_offers(model.catalog)):
            note(f"the served model (version {version}): {said}")


def keys_edit(
    name: Annotated[str, typer.Argument(help="The key's name, as `nextbest keys list` shows it.")],
    territory_id: Annotated[
        str | None,
        typer.Option("--territory-id", help="Move a rep key to this territory."),
    ] = None,
    purpose: Annotated[
        str | None,
        typer.Option("--purpose", help="promotional | medical: bind the key to it."),
    ] = None,
    channels: Annotated[
        list[str] | None,
        _channel_option("Bind a channel key to these channels instead (repeat for more)."),
    ] = None,
    path: KeysFileOpt = None,
) -> Any:
    """Change a key's territory, purpose or channels; the key itself stays the same.

    A rep moved to another territory keeps the key its CRM holds. Running servers apply
    the change from their next request on."""
    from nextbest.service.apikeys import ApiKeyError, edit_key

    changes: dict[str, Any] = {}
    if territory_id is not None:
        changes["territory_id"] = territory_id
    if purpose is not None:
        changes["purpose"] = purpose
    if channels:
        changes["channels"] = channels
    if not changes:
        raise fail(
            "nothing to change: give --territory-id, --purpose or --channel "
            f"(`nextbest keys edit {name} --territory-id T002`)"
        )
    read_settings()  # an invalid setting stops here, before the file is changed
    target = _keys_file(path)
    try:
        edited = edit_key(target, name=name, changes=changes, given_as=KEY_OPTIONS)
    except (ApiKeyError, OSError) as exc:
        raise fail(str(exc)) from None
    said = []
    for field, shown in (("territory_id", "territory"), ("purpose", "purpose")):
        old, new = getattr(edited.before, field), getattr(edited.after, field)
        if old != new:
            said.append(f"{shown} {old or '(none)'} -> {new}")
    old_channels, new_channels = edited.before.channels, edited.after.channels
    if old_channels != new_channels:
        said.append(
            f"channels {', '.join(old_channels) if old_channels else '(every channel)'} -> "
            f"{', '.join(new_channels or ())}"
        )
    console.print(
        f"key '{name}' in {target}: {'; '.join(said)}; its key stays the same, running "
        "servers apply it from their next request"
        if said
        else f"key '{name}' in {target} is so already: nothing changed",
        highlight=False,
    )
    _note_against_served([edited.after], rep_said="this rep's requests are")
    return edited


# The columns `keys import` reads: those of a key entry, channels separated by ';'.
IMPORT_COLUMNS = ("name", "role", "territory_id", "purpose", "channels")


def keys_import(
    source: Annotated[
        Path,
        typer.Argument(
            help="CSV with a header: name, role, and as needed territory_id, purpose, "
            "channels (several separated by ';'); one key per row."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="New CSV (mode 600) for the keys: name, role, territory_id, key per row, the "
            "only place they are shown. An existing file is refused.",
        ),
    ],
    path: KeysFileOpt = None,
) -> list[Any]:
    """Add a key for each row of a CSV (a field force's reps) in one change of the file.

    Every row is checked first: one refused adds none. Running servers accept them at
    once."""
    import csv

    from nextbest.service.apikeys import ApiKeyError, NewKey, add_keys

    read_settings()  # an invalid setting stops here, before anything is written
    target = _keys_file(path)
    if out.exists() or out.is_symlink():
        raise fail(
            f"--out: {out} exists: the keys are written to a new file only (one with "
            "earlier keys in it is not overwritten)"
        )
    given = _import_rows(source)
    if not given:
        raise fail(f"{source}: no rows below the header: no key to add")
    # The keys are written beside --out before the key file is changed, and put in
    # its place once it is: keys the file holds hashes of are never lost, and a
    # refused change leaves no file of keys that do not work.
    staged: Path | None = None

    def keep(new: list[NewKey]) -> None:
        nonlocal staged
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        staged = Path(name)
        with os.fdopen(fd, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["name", "role", "territory_id", "key"])
            for k in new:
                writer.writerow(
                    [k.principal.name, k.principal.role, k.principal.territory_id or "", k.key]
                )
            file.flush()
            os.fsync(file.fileno())

    try:
        added = add_keys(target, given, keep=keep)
    except (ApiKeyError, OSError) as exc:
        if staged is not None:
            staged.unlink(missing_ok=True)
        said = path_error(exc) if isinstance(exc, OSError) and exc.filename else str(exc)
        raise fail(said) from None
    if staged is None:  # add_keys hands the keys over before it writes the file
        raise RuntimeError("the new keys were not kept")
    try:
        os.link(staged, out)  # never over a file made meanwhile
    except OSError as exc:
        raise fail(
            f"the keys were added in {target} but not put in {out} ({path_error(exc)}): "
            f"they are in {staged}, the only place they are"
        ) from None
    staged.unlink()
    console.print(
        f"{len(added):,} key{'s' * (len(added) > 1)} added in {target}; "
        f"{'they are' if len(added) > 1 else 'it is'} in {out} (mode 600) and shown nowhere "
        "else: hand each to its user, then delete the file",
        highlight=False,
    )
    _note_against_served([k.principal for k in added])
    return added


def _import_rows(source: Path) -> list[tuple[str, dict[str, Any]]]:
    """The key entries of ``source`` (CSV or Parquet, read as every data file is),
    each with where it is: ``reps.csv, row 3``, numbered as data files' rows are (the
    header not counted, a CSV file's blank lines counted)."""
    from nextbest.contract.errors import ContractError
    from nextbest.contract.files import read_table, row_numbers
    from nextbest.yamlfile import near_hint

    try:
        raw = read_table(source)
    except ContractError as exc:
        raise fail(str(exc)) from None
    header = [str(c) for c in raw.columns]
    unknown = [c for c in header if c not in IMPORT_COLUMNS]
    if unknown:
        raise fail(
            f"{source}: column {unknown[0]!r} is not one a key takes"
            f"{near_hint(unknown[0], IMPORT_COLUMNS)} (columns: {', '.join(IMPORT_COLUMNS)})"
        )
    missing = [c for c in ("name", "role") if c not in header]
    if missing:
        raise fail(f"{source}: no column {missing[0]!r} (columns: name, role, ...)")
    rows = row_numbers(raw)
    # Cells as text, '' for empty (a Parquet file's null too); an empty cell is an
    # option not given.
    cells = {
        c: raw[c].astype(object).where(raw[c].notna(), "").astype(str).str.strip() for c in header
    }
    given: list[tuple[str, dict[str, Any]]] = []
    for i in range(len(raw)):
        cell = {c: str(column.iat[i]) for c, column in cells.items()}
        channels = [c.strip() for c in cell.get("channels", "").split(";") if c.strip()]
        fields = {
            "name": cell["name"],
            "role": cell["role"] or None,
            "territory_id": cell.get("territory_id") or None,
            "purpose": cell.get("purpose") or None,
            "channels": channels or None,
        }
        given.append((f"{source}, row {rows(i)}", fields))
    return given


def _served_model() -> tuple[Any, str] | str | None:
    """The served model and its version, to check a key against; None before a model
    is served (nothing to check), or why it could not be read (one line naming the
    store)."""
    import sqlite3

    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    from nextbest import registry
    from nextbest.storage.db import describe_database_error

    settings = read_settings()
    store = without_password(settings.resolved_registry_uri)
    try:
        if not registry.registry_exists(settings):
            return None
        version = registry.alias_version(settings, settings.serve_alias)
        if version is None:
            return None
        return registry.load_version(settings, version, alias=settings.serve_alias), version
    except registry.RegistryError as exc:
        return str(exc)
    except OSError as exc:
        said = path_error(exc) if exc.filename is not None else str(exc)
        return f"the MLflow store {store} cannot be used: {said}"
    except (MlflowException, SQLAlchemyError, sqlite3.Error) as exc:
        return f"the MLflow store {store} cannot be read: {describe_database_error(exc)}"


def _note_unserved_channels(
    bound: tuple[str, ...], *, model_read: tuple[Any, str] | str | None = None
) -> str | None:
    """Warn of each channel of a channel key (``bound``, as catalogs spell them) that
    the served model's catalog has no action on: a key bound to no channel it has is
    answered with nothing to do, every time. ``model_read``: :func:`_served_model`'s answer,
    read already (None: read here). Returns why the check could not be made, else None."""
    from nextbest.contract.schema import near_channel

    served = _served_model() if model_read is None else model_read
    if not isinstance(served, tuple):
        return served
    model, version = served
    catalog: set[str] = set(model.catalog["channel"].astype(str))
    missing = [c for c in bound if c not in catalog]
    if missing:
        none = len(missing) == len(bound)
        meant = [
            f"'{near}' for '{c}'" for c in missing if (near := near_channel(c, catalog)) is not None
        ]
        hint = f"; did you mean {', '.join(meant)}?" if meant else ""
        note(
            f"the served model (version {version}) has no action on channel(s) "
            f"{', '.join(missing)} (its channels: {', '.join(sorted(catalog))}{hint}): "
            + (
                "this key's requests are answered with nothing to do until it does"
                if none
                else "this key's requests get none of those until it does"
            )
        )
    return None


def _note_unserved_territories(
    refused: Mapping[str, str], *, model_read: tuple[Any, str] | str | None = None
) -> str | None:
    """Warn of each territory of ``refused`` (a rep key's territory -> whose requests
    it would refuse, "this rep's requests are") in which the served model has no
    HCP (a typo locks the rep out), as the servers align HCPs to territories: by
    the territory alignment file when it is set, else by the model's hcps file;
    nothing to check before a model is served. Loads the served model (``model_read``:
    :func:`_served_model`'s answer, read already).

    Returns why the check could not be made (a registry or a served model that
    cannot be read, in one line naming it), else None."""
    from nextbest.service.territories import (
        TerritoriesError,
        TerritoryAlignment,
        near_territories,
        territories_without_hcps,
    )

    settings = read_settings()
    try:
        alignment = TerritoryAlignment.configured(settings)
    except TerritoriesError as exc:
        console.print(
            f"[yellow]note:[/yellow] the servers refuse every reload until the territory "
            f"alignment file is fixed: {exc}",
            highlight=False,
        )
        return None
    loaded = _served_model() if model_read is None else model_read
    if not isinstance(loaded, tuple):
        return loaded  # None: no model served yet, nothing to check
    model, version = loaded
    hcp_ids = model.hcps["hcp_id"].astype(str).to_numpy(dtype=object)
    if alignment is None:
        served = set(model.hcps["territory_id"].astype(str))
        where = ""
    else:
        served = {t for t in alignment.assign(hcp_ids).tolist() if t is not None}
        where = f" in the territory alignment {alignment.source}"
    for territory_id in territories_without_hcps(refused, served):
        # Territories are matched exactly: t001 for T001 locks the rep out too.
        alike = near_territories(territory_id, served)
        meant = f" (did you mean {' or '.join(alike)}? territories match exactly)" if alike else ""
        note(
            f"the served model (version {version}) has no HCP{where} in territory "
            f"{territory_id}{meant}: {refused[territory_id]} refused until it does"
        )
    return None


def keys_list(
    path: KeysFileOpt = None,
    check_territories: Annotated[
        bool,
        typer.Option(
            "--check-territories",
            help="Also note each rep key whose territory holds no HCP of the served model "
            "(loads that model from the registry; exit code 2 when it cannot be read).",
        ),
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON instead of the table: a list of {name, role, territory_id, "
            "purpose, channels, old_key_until} (null where the table is blank).",
        ),
    ] = False,
) -> list[Any]:
    """List the keys: names, roles, territories, purposes, channels (never the keys).

    Neither the keys nor their hashes are shown; a key without channels speaks for
    every channel. "old key until": when the old key a rotation kept stops being
    accepted ("expired" once past; the next `keys add` or `keys remove` drops it from
    the file). A file others may read or change, or with keys in plaintext, is
    warned of. Only the key file is read: the registry and the served model only
    with --check-territories."""
    from rich.markup import escape

    from nextbest.clock import utc_now
    from nextbest.service.apikeys import ENV_KEYS, ApiKeyError, KeyStore

    target = _keys_file(path)
    try:
        store = KeyStore.load(path=target, env={})
    except ApiKeyError as exc:
        raise fail(str(exc)) from None
    for warning in store.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    principals, retiring, now = store.principals, store.retiring, utc_now()
    if as_json:
        import json

        listed = [
            {
                "name": p.name,
                "role": p.role,
                "territory_id": p.territory_id,
                "purpose": p.purpose,
                "channels": list(p.channels) if p.channels is not None else None,
                "old_key_until": None if (u := retiring.get(p.name)) is None else u.isoformat(),
            }
            for p in principals
        ]
        typer.echo(json.dumps(listed, indent=1))
    elif principals:
        table = Table(title=f"API keys in {target}")
        for column in ("name", "role", "territory_id", "purpose", "channels", "old key until"):
            table.add_column(column)
        for p in principals:
            channels = ", ".join(p.channels) if p.channels is not None else ""
            until = retiring.get(p.name)
            old = "" if until is None else "expired" if until <= now else minute(until.isoformat())
            table.add_row(p.name, p.role, p.territory_id or "", p.purpose or "", channels, old)
        Console(soft_wrap=True, width=width(sys.stdout)).print(table)
    else:
        where = "no API key file at" if not target.exists() else "no API keys in"
        unkeyed = (
            ""
            if os.environ.get(ENV_KEYS)
            else " (with auth on, the default, a server with no key answers every /v1 request 401)"
        )
        stdout.print(
            f"{where} {target}{unkeyed}: `nextbest keys add NAME --role admin|channel|rep|monitor` "
            "adds one",
            highlight=False,
        )
    reps: dict[str, list[str]] = {}
    for p in principals:
        if p.role == "rep" and p.territory_id:
            reps.setdefault(p.territory_id, []).append(f"'{p.name}'")
    if reps and check_territories:
        unchecked = _note_unserved_territories(
            {
                t: f"the requests of rep key{'s' * (len(names) > 1)} {', '.join(names)} are"
                for t, names in reps.items()
            }
        )
        if unchecked is not None:
            raise fail(
                "the territories of the rep keys were not checked against the served "
                f"model: {unchecked}"
            )
    if os.environ.get(ENV_KEYS):
        console.print(f"(keys given in {ENV_KEYS} are not listed: they are not in the file)")
        try:  # the file alone is valid; with the variable, as a server reads them?
            KeyStore.load(path=target)
        except ApiKeyError as exc:
            raise fail(f"a server would refuse these keys: {exc}") from None
    return principals


def keys_remove(
    names: Annotated[
        list[str],
        typer.Argument(
            metavar="NAME",
            help="The keys' names, as `nextbest keys list` shows them; several are removed in "
            "one change, or none when one is unknown.",
        ),
    ],
    path: KeysFileOpt = None,
) -> None:
    """Delete keys, each with the old key a rotation kept for it.

    Running servers refuse them from their next request on."""
    from nextbest.service.apikeys import ApiKeyError, remove_keys_from_file

    read_settings()  # an invalid setting stops here, before the file is changed

    target = _keys_file(path)
    try:
        retiring = remove_keys_from_file(target, names=names)
    except (ApiKeyError, OSError) as exc:
        raise fail(str(exc)) from None
    for name, until in retiring.items():
        old = " with the old key a rotation kept" if until is not None else ""
        console.print(f"key '{name}' removed from {target}{old}", highlight=False)
