"""What every `tracker` command module shares: the --config option and the (lazily built) rich consoles."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", envvar="TRACKER_CONFIG",
                                         help="YAML config file", show_default=True)]
DEFAULT_CONFIG = Path("config/tracker.yaml")


class LazyConsole:
    """A rich Console built on first use: `tracker check --json` never prints through rich, and importing
    rich is ~30 ms of every run's start-up."""

    def __init__(self, **options: Any):
        self._options = options
        self._console: Any = None

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


out = LazyConsole(width=None if sys.stdout.isatty() else 200)
err = LazyConsole(stderr=True)
