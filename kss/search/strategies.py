"""The search strategies and their checks (the trial loop itself is kss.search.guided's)."""

from __future__ import annotations

from kss.errors import KssError

STRATEGIES = ("random", "tpe", "evolution", "pareto")
OBJECTIVES = ("params", "energy_uj", "sops")  # pareto's second objective, minimised
STUDY = "study.db"
MEMORY = ("memory", "sqlite:///:memory:", "sqlite://")  # an in-memory study: one process, no resume


def check_strategy(setup) -> None:
    """One line for a strategy, objective or storage that cannot work (SearchSetup calls this)."""
    if setup.strategy not in STRATEGIES:
        raise KssError(f"unknown search.strategy {setup.strategy!r}; use one of {', '.join(STRATEGIES)}")
    if setup.strategy == "random":
        return
    if setup.strategy == "pareto":
        if setup.minimise is None:
            raise KssError("search.strategy=pareto needs a second objective: search.minimise=params "
                           "(or energy_uj / sops, with cost.every_candidate=true)")
        if setup.minimise not in OBJECTIVES:
            raise KssError(f"unknown search.minimise {setup.minimise!r}; use one of {', '.join(OBJECTIVES)}")
        if setup.minimise != "params" and not setup.cost_every:
            raise KssError(f"search.minimise={setup.minimise} needs every candidate's cost: "
                           "pass cost.every_candidate=true")
    if setup.strategy == "evolution" and (isinstance(setup.population, bool) or not isinstance(setup.population, int)
                                          or setup.population < 2):
        raise KssError(f"search.population must be an integer >= 2 (got {setup.population!r})")
    if setup.storage in MEMORY and setup.shards > 1:
        raise KssError(f"search.storage={setup.storage} is one process's memory: shards={setup.shards} workers "
                       "need a shared study (leave search.storage unset for study.db, or pass a database URL)")
    if setup.storage is not None and setup.storage not in MEMORY:
        open_storage(setup.storage)  # a URL that cannot be opened fails here, before anything is written


def shown(url: str) -> str:
    """A storage URL without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL at all: say it as given
        return url


def open_storage(url: str):
    import optuna

    if url in MEMORY:
        return optuna.storages.InMemoryStorage()
    # SQLite: parallel workers wait for each other's writes rather than failing after SQLite's 5 s
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as error:  # noqa: BLE001 - driver missing, host unreachable, not a URL, ...
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise KssError(f"search.storage {shown(url)} cannot be opened ({reason}); pass an SQLAlchemy URL "
                       "this machine can reach (sqlite:///path/study.db, postgresql://...), or leave it unset") from None
