"""What a serving process holds: the loaded model, the database, and how to swap models."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from nextbest import registry
from nextbest.errors import ModelNotLoadedError
from nextbest.policy.exploration import EpsilonGreedy
from nextbest.service.recommend import Recommender
from nextbest.settings import Settings
from nextbest.storage.db import make_engine, make_session_factory, migrate

logger = logging.getLogger(__name__)


@dataclass
class ReloadResult:
    version: str
    changed: bool


class ServingRuntime:
    """The served recommender and the feedback store of one process.

    ``recommender`` is replaced by a single attribute assignment, so a request
    that already holds the old one finishes with it and the next one gets the
    new one: no request fails during a swap.
    """

    def __init__(self, settings: Settings, engine: Engine, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = sessions
        self._recommender: Recommender | None = None
        self._reload_lock = threading.Lock()
        self.last_reload_error: str | None = None

    @classmethod
    def start(cls, settings: Settings, *, load_model: bool = True) -> ServingRuntime:
        """Open the database (migrating it) and load the served alias's model."""
        engine = make_engine(settings.resolved_database_url)
        migrate(engine)
        runtime = cls(settings, engine, make_session_factory(engine))
        if load_model:
            runtime.reload()
        return runtime

    @property
    def recommender(self) -> Recommender:
        current = self._recommender
        if current is None:
            raise ModelNotLoadedError(
                f"no model is loaded; train one with `nextbest train` "
                f"(last error: {self.last_reload_error or 'none'})"
            )
        return current

    @property
    def model_version(self) -> str | None:
        return self._recommender.version if self._recommender else None

    def reload(self) -> ReloadResult:
        """Load the served alias's current version beside the old one, then swap.

        If loading fails the old model keeps serving and the error is raised
        (and kept in ``last_reload_error``).
        """
        with self._reload_lock:
            settings = self.settings
            try:
                version = registry.alias_version(settings, settings.serve_alias)
                if version is None:
                    raise registry.RegistryError(
                        f"model '{settings.model_name}' has no alias '{settings.serve_alias}'"
                    )
                if self._recommender is not None and self._recommender.version == version:
                    return ReloadResult(version=version, changed=False)
                model = registry.load_version(settings, version)
                recommender = Recommender(
                    model=model,
                    version=version,
                    exploration=EpsilonGreedy(
                        epsilon=settings.epsilon,
                        holdout_rate=settings.holdout_rate,
                        seed=settings.seed,
                    ),
                )
            except Exception as exc:
                self.last_reload_error = f"{type(exc).__name__}: {exc}"
                logger.error("model reload failed, keeping version %s: %s", self.model_version, exc)
                raise
            self._recommender = recommender
            self.last_reload_error = None
            logger.info("serving model %s version %s", settings.model_name, version)
            return ReloadResult(version=version, changed=True)

    def close(self) -> None:
        self.engine.dispose()
