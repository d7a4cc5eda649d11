"""Pluggable notifications: each sink is a callable that takes one event dict.

An event is ``{"kind", "level", "message", "sent_at", **fields}``. Sinks: ``log`` (the logging module, INFO or
WARNING by level; DEBUG for level "debug") and ``webhook`` (POST the event as JSON). A failing sink is logged and never stops the
runtime.
"""
from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from data.errors import UserError
from trainer.runtime.store import json_safe

log = logging.getLogger("candlelab.runtime")

SINKS = ("log", "webhook")
_WARNING_LEVELS = ("warning", "warn", "error", "critical")


class LogSink:
    """Logs ``kind: message`` at WARNING for warning/error/critical events, INFO otherwise."""

    def __call__(self, event: dict) -> None:
        name = str(event.get("level", "info")).lower()
        level = logging.WARNING if name in _WARNING_LEVELS else logging.DEBUG if name == "debug" else logging.INFO
        extra = {k: v for k, v in event.items() if k not in ("kind", "level", "message", "sent_at")}
        log.log(level, "%s: %s%s", event.get("kind", "event"), event.get("message", ""),
                f" {json.dumps(json_safe(extra), sort_keys=True)}" if extra else "")


class WebhookSink:
    """POSTs each event as JSON to ``url``; a failure (refused, timeout, non-2xx) is logged, never raised."""

    def __init__(self, url: str, timeout: float = 3.0):
        parsed = urllib.parse.urlparse(str(url))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UserError(f"webhook_url must be an http(s) URL, got {url!r}", "runtime.notify.webhook_url")
        self.url = str(url)
        self.timeout = float(timeout)

    def __call__(self, event: dict) -> None:
        body = json.dumps(json_safe(event), sort_keys=True).encode("utf-8")
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            log.warning("notify: webhook %s failed for %s event: %s", self.url, event.get("kind"), exc)


def build_sinks(cfg: Mapping) -> list[Callable[[dict], None]]:
    """Sinks from ``cfg.sinks`` (``[log]``, ``[log, webhook]``); ``webhook`` needs ``cfg.webhook_url``."""
    names = cfg.get("sinks") if cfg is not None else None
    if names is None:
        names = ["log"]
    elif isinstance(names, str):
        names = [names]
    sinks: list[Callable[[dict], None]] = []
    for name in names:
        if name == "log":
            sinks.append(LogSink())
        elif name == "webhook":
            url = cfg.get("webhook_url")
            if not url:
                raise UserError("the webhook sink needs webhook_url", "runtime.notify.webhook_url")
            sinks.append(WebhookSink(str(url), float(cfg.get("webhook_timeout", 3.0))))
        else:
            raise UserError(f"unknown sink {name!r}; choose from {', '.join(SINKS)}", "runtime.notify.sinks")
    return sinks


class Notifier:
    """Sends each notification to every sink; a sink that raises is logged and the others still run."""

    def __init__(self, sinks):
        self.sinks = list(sinks)

    def notify(self, kind: str, message: str, level: str = "info", **fields) -> None:
        event = {**fields, "kind": kind, "level": level, "message": message,
                 "sent_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:   # a broken sink must not stop trading
                log.exception("notify: sink %r failed for %s event", sink, kind)
