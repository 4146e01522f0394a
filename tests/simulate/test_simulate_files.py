"""Writing the world to disk, and reading it back through the data contract."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from nextbest.simulate import SimulatedWorld, WorldExistsError, simulate_world


def test_write_parquet_round_trips(tiny_world: SimulatedWorld, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "world"
    paths = tiny_world.write(out, fmt="parquet")
    assert sorted(p.name for p in out.iterdir()) == [
        "catalog.parquet",
        "hcps.parquet",
        "interactions.parquet",
        "truth.parquet",
    ]
    for name in ("hcps", "catalog", "interactions", "truth"):
        pd.testing.assert_frame_equal(pd.read_parquet(paths[name]), getattr(tiny_world, name))


def test_write_csv_keeps_no_touch_rows_empty(tiny_world: SimulatedWorld, tmp_path: Path) -> None:
    paths = tiny_world.write(tmp_path, fmt="csv")
    assert {p.name for p in tmp_path.iterdir()} == {
        "catalog.csv",
        "hcps.csv",
        "interactions.csv",
        "truth.parquet",
    }
    interactions = pd.read_csv(paths["interactions"], parse_dates=["timestamp"])
    assert len(interactions) == len(tiny_world.interactions)
    no_touch = tiny_world.interactions["action_id"].isna().to_numpy()
    assert interactions.loc[no_touch, "action_id"].isna().all()
    assert interactions.loc[~no_touch, "action_id"].notna().all()
    assert (interactions["timestamp"] == tiny_world.interactions["timestamp"]).all()


def test_write_rejects_unknown_format(tiny_world: SimulatedWorld, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fmt must be"):
        tiny_world.write(tmp_path, fmt="xlsx")  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_written_world_loads_through_the_contract(
    tiny_world: SimulatedWorld, tmp_path: Path, fmt: str
) -> None:
    contract = pytest.importorskip("nextbest.contract")
    tiny_world.write(tmp_path, fmt=fmt)  # type: ignore[arg-type]
    dataset = contract.load_dataset(tmp_path)
    assert len(dataset.hcps) == len(tiny_world.hcps)
    assert len(dataset.catalog) == len(tiny_world.catalog)
    assert len(dataset.interactions) == len(tiny_world.interactions)
    assert set(dataset.interactions["hcp_id"]) == set(tiny_world.hcps["hcp_id"])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_write_keeps_another_world_unless_told_to_replace_it(
    tiny_world: SimulatedWorld, tmp_path: Path, fmt: str
) -> None:
    """Writing into a directory that held another world replaced its files without a
    word: they are kept (and named) unless ``replace``; the same world is kept as is."""
    tiny_world.write(tmp_path, fmt=fmt)  # type: ignore[arg-type]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    tiny_world.write(tmp_path, fmt=fmt)  # type: ignore[arg-type]  # the same world again
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps

    other = simulate_world(n_hcps=300, periods=8, seed=8)
    with pytest.raises(WorldExistsError) as refused:
        other.write(tmp_path, fmt=fmt)  # type: ignore[arg-type]
    names = [f"hcps.{fmt}", f"catalog.{fmt}", f"interactions.{fmt}", "truth.parquet"]
    assert refused.value.names == names
    assert str(refused.value) == (
        f"{tmp_path} holds another world: writing this one would replace hcps.{fmt}, "
        f"catalog.{fmt}, interactions.{fmt} and truth.parquet"
    )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # and no leftovers

    other.write(tmp_path, fmt=fmt, replace=True)  # type: ignore[arg-type]
    fresh = tmp_path.parent / f"{tmp_path.name}-fresh"
    other.write(fresh, fmt=fmt)  # type: ignore[arg-type]
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {
        p.name: p.read_bytes() for p in fresh.iterdir()
    }


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_another_world_is_refused_before_it_is_simulated(tmp_path: Path, fmt: str) -> None:
    """`simulate --out` found another world there only once the whole world had been
    simulated and written beside it (6 s of CPU at 20,000 HCPs x 52 periods): its
    population and catalog, drawn alone, and the history's row count tell it first."""
    from nextbest.simulate import refuse_another_world

    refuse_another_world(tmp_path, fmt, n_hcps=30, periods=3, seed=1)  # type: ignore[arg-type]
    simulate_world(n_hcps=30, periods=3, seed=1).write(tmp_path, fmt=fmt)  # type: ignore[arg-type]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    # The same world: left to write, which keeps it as it is.
    refuse_another_world(tmp_path, fmt, n_hcps=30, periods=3, seed=1)  # type: ignore[arg-type]
    every = [f"hcps.{fmt}", f"catalog.{fmt}", f"interactions.{fmt}", "truth.parquet"]
    for other, names in (
        ({"n_hcps": 30, "periods": 3, "seed": 2}, every),
        # Its catalog is this world's (drawn apart from the population).
        ({"n_hcps": 31, "periods": 3, "seed": 1}, [every[0], *every[2:]]),
        # Its population is this world's (the catalog's approvals span the periods).
        ({"n_hcps": 30, "periods": 4, "seed": 1}, every[1:]),
    ):
        with pytest.raises(WorldExistsError) as refused:
            refuse_another_world(tmp_path, fmt, **other)  # type: ignore[arg-type]
        assert refused.value.names == names, (other, refused.value.names)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # and no leftovers
    # A history of another length beside this world's population and catalog.
    history = tmp_path / f"interactions.{fmt}"
    if fmt == "csv":
        history.write_text("".join(history.read_text().splitlines(keepends=True)[:-1]))
    else:
        pd.read_parquet(history).iloc[:-1].to_parquet(history, index=False)
    with pytest.raises(WorldExistsError) as refused:
        refuse_another_world(tmp_path, fmt, n_hcps=30, periods=3, seed=1)  # type: ignore[arg-type]
    assert refused.value.names == every[2:]
