"""What local mode shows while it runs: a live rich table on a terminal, plain log lines otherwise (CI)."""
from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from autoscaler.local.runner import ModelView

__all__ = ["LiveView", "PlainLog", "make_view", "engines_text", "decision_text"]


def _f(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def engines_text(engines: dict[str, int]) -> str:
    order = ("ready", "starting", "draining", "stopping")
    return " ".join(f"{k} {engines[k]}" for k in order if engines.get(k))  or "none"


def decision_text(v: ModelView) -> str:
    d = v.decision
    if d is None:
        return "-"
    return f"{d.current}->{d.desired} {d.reason} [{d.signal}] {d.detail}".strip()


class PlainLog:
    """One line per model per tick when something changed, else every `every_s` seconds."""

    def __init__(self, out=None, every_s: float = 10.0, header: str = ""):
        self._out = out or sys.stdout
        self._every = every_s
        self._last: dict[str, tuple] = {}
        self._last_t: dict[str, float] = {}
        if header:
            print(header, file=self._out, flush=True)

    def update(self, views: Sequence[ModelView], extra: str = "") -> None:
        for v in views:
            key = (tuple(sorted(v.engines.items())), v.held, v.desired, v.decision.reason if v.decision else None)
            if key == self._last.get(v.model) and v.time - self._last_t.get(v.model, 0) < self._every:
                continue
            self._last[v.model], self._last_t[v.model] = key, v.time
            print(f"{time.strftime('%H:%M:%S', time.localtime(v.time))} {v.model}: arrivals {_f(v.arrival_rate, '{:.2f}')}/s "
                  f"held {v.held} waiting {_f(v.waiting, '{:.0f}')} running {_f(v.running, '{:.0f}')} "
                  f"kv {_f(None if v.kv_cache_usage is None else v.kv_cache_usage * 100, '{:.0f}%')} "
                  f"engines: {engines_text(v.engines)} restarts {v.restarts} | {decision_text(v)}"
                  + (f" | {extra}" if extra else ""),
                  file=self._out, flush=True)

    def close(self) -> None:
        pass


class LiveView:
    """A rich table per tick plus the last decisions that changed something."""

    def __init__(self, title: str, console: Console | None = None):
        self._title = title
        self._console = console or Console()
        self._changes: deque[str] = deque(maxlen=8)
        self._live = Live(Text(title), console=self._console, refresh_per_second=4, transient=False)
        self._live.start()
        self.footer = ""

    def update(self, views: Sequence[ModelView], extra: str = "") -> None:
        table = Table(title=self._title, expand=False)
        for col in ("model", "arrivals/s", "held", "waiting", "running", "KV", "engines", "desired", "restarts"):
            table.add_column(col, justify="left" if col in ("model", "engines") else "right")
        for v in views:
            table.add_row(v.model, _f(v.arrival_rate, "{:.2f}"), str(v.held), _f(v.waiting, "{:.0f}"),
                          _f(v.running, "{:.0f}"),
                          _f(None if v.kv_cache_usage is None else v.kv_cache_usage * 100, "{:.0f}%"),
                          engines_text(v.engines), str(v.desired), str(v.restarts))
            d = v.decision
            if d is not None and d.desired != d.current:
                line = f"{time.strftime('%H:%M:%S', time.localtime(d.time))} {v.model}: {decision_text(v)}"
                if not self._changes or self._changes[-1] != line:
                    self._changes.append(line)
        last = [f"{v.model}: {decision_text(v)}" for v in views]
        parts = [table, Text("last decision: " + " | ".join(last), overflow="fold")]
        if self._changes:
            parts.append(Text("scaling decisions:\n" + "\n".join(self._changes), overflow="fold"))
        if extra or self.footer:
            parts.append(Text(extra or self.footer, overflow="fold"))
        self._live.update(Group(*parts))

    def close(self) -> None:
        self._live.stop()


def make_view(title: str, plain: bool | None = None):
    """A LiveView on a terminal, a PlainLog otherwise (or when `plain`)."""
    if plain is None:
        plain = not sys.stdout.isatty()
    return PlainLog(header=title) if plain else LiveView(title)
