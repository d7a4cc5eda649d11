"""Pluggable notifications: each sink is a callable that takes one event dict.

An event is ``{"kind", "level", "message", "sent_at", **fields}``. Sinks: ``log`` (the logging module, INFO or
WARNING by level; DEBUG for level "debug"), ``webhook`` (POST the event as JSON) and ``telegram`` (the Bot API's
``sendMessage``; token and chat id from environment variables only). A failing sink is logged and never stops the
runtime.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

from core.errors import UserError
from trainer.runtime.store import json_safe

log = logging.getLogger("candlelab.runtime")

SINKS = ("log", "webhook", "telegram")
_WARNING_LEVELS = ("warning", "warn", "error", "critical")
LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}
TELEGRAM_TEXT_LIMIT = 4096  # the Bot API refuses longer messages


class LogSink:
    """Logs ``kind: message`` at WARNING for warning/error/critical events, INFO otherwise."""

    def __call__(self, event: dict) -> None:
        name = str(event.get("level", "info")).lower()
        level = logging.WARNING if name in _WARNING_LEVELS else logging.DEBUG if name == "debug" else logging.INFO
        extra = {k: v for k, v in event.items() if k not in ("kind", "level", "message", "sent_at")}
        log.log(
            level,
            "%s: %s%s",
            event.get("kind", "event"),
            event.get("message", ""),
            f" {json.dumps(json_safe(extra), sort_keys=True)}" if extra else "",
        )


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
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            log.warning("notify: webhook %s failed for %s event: %s", self.url, event.get("kind"), exc)


class TelegramSink:
    """The Bot API's ``sendMessage``: POST ``<base_url>/bot<token>/sendMessage`` with JSON ``{chat_id, text}``.

    Signal events are sent only when their ``tier`` is in ``tiers``; other events when their level reaches
    ``min_level``. A refused or unreachable request is retried ``retries`` times, waiting ``backoff * 2**k``
    seconds (or the ``retry_after`` a 429 answer names, capped at ``max_wait``); a 4xx other than 429 is not
    retried. Nothing is raised and the token never reaches the log."""

    def __init__(
        self,
        token: str,
        chat_id: str,
        base_url: str = "https://api.telegram.org",
        tiers=("high",),
        min_level: str = "info",
        retries: int = 3,
        backoff: float = 1.0,
        timeout: float = 5.0,
        max_wait: float = 30.0,
        wait: Callable[[float], None] = time.sleep,
    ):
        parsed = urllib.parse.urlparse(str(base_url))
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise UserError(f"base_url must be an http(s) URL, got {base_url!r}", "runtime.notify.telegram.base_url")
        if str(min_level).lower() not in LEVELS:
            raise UserError(
                f"min_level must be one of {', '.join(LEVELS)}, got {min_level!r}", "runtime.notify.telegram.min_level"
            )
        if int(retries) < 0 or float(backoff) < 0 or float(timeout) <= 0:
            raise UserError(
                f"retries and backoff_seconds must be >= 0 and timeout_seconds > 0, got {retries}, "
                f"{backoff}, {timeout}",
                "runtime.notify.telegram",
            )
        self.base_url = str(base_url).rstrip("/")
        self._url = f"{self.base_url}/bot{token}/sendMessage"
        self.chat_id, self.tiers = str(chat_id), {str(t) for t in (tiers or ())}
        self.min_level = LEVELS[str(min_level).lower()]
        self.retries, self.backoff, self.timeout = int(retries), float(backoff), float(timeout)
        self.max_wait, self.wait = float(max_wait), wait
        self.sent = self.failed = 0

    def wants(self, event: dict) -> bool:
        if event.get("kind") == "signal":
            return str(event.get("tier")) in self.tiers
        return LEVELS.get(str(event.get("level", "info")).lower(), 20) >= self.min_level

    def __call__(self, event: dict) -> None:
        if not self.wants(event):
            return
        text = f"{event.get('kind', 'event')}: {event.get('message', '')}"
        if event.get("at"):
            text += f" (at {event['at']})"
        body = json.dumps(
            {"chat_id": self.chat_id, "text": text[:TELEGRAM_TEXT_LIMIT], "disable_web_page_preview": True}
        ).encode("utf-8")
        for attempt in range(self.retries + 1):
            retry_after, why = self._post(body)
            if why is None:
                self.sent += 1
                return
            if retry_after is None or attempt == self.retries:
                break
            self.wait(min(self.max_wait, max(retry_after, self.backoff * 2**attempt)))
        self.failed += 1
        log.warning(
            "notify: telegram %s failed for %s event after %d attempt(s): %s",
            self.base_url,
            event.get("kind"),
            attempt + 1,
            why,
        )

    def _post(self, body: bytes) -> tuple[float | None, str | None]:
        """(seconds to wait before a retry or None = do not retry, why it failed or None = sent)."""
        request = urllib.request.Request(
            self._url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read() or b"{}")
            if isinstance(answer, dict) and answer.get("ok") is True:
                return None, None
            return 0.0, f"answer without ok: {str(answer)[:200]}"
        except urllib.error.HTTPError as exc:  # the API's own refusal: {"ok": false, "description", ...}
            try:
                answer = json.loads(exc.read() or b"{}")
            except ValueError:
                answer = {}
            detail = f"HTTP {exc.code} {str(answer.get('description', ''))[:200]}".strip()
            if exc.code == 429:
                return float((answer.get("parameters") or {}).get("retry_after") or 0.0), detail
            return (0.0 if exc.code >= 500 else None), detail
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            return 0.0, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def telegram_sink(cfg: Mapping | None, environ: Mapping[str, str] | None = None) -> TelegramSink:
    """A TelegramSink from ``runtime.notify.telegram``; the token and chat id come from the environment
    variables it names (never from a config file, which may be committed)."""
    cfg = dict(cfg or {})
    env = os.environ if environ is None else environ
    for secret in ("token", "chat_id", "bot_token"):
        if cfg.get(secret) is not None:
            raise UserError(
                f"the telegram {secret} does not belong in a config file: put it in the environment "
                f"variable that {secret.replace('bot_', '')}_env names",
                f"runtime.notify.telegram.{secret}",
            )
    values = {}
    for key, default in (("token_env", "CANDLELAB_TELEGRAM_TOKEN"), ("chat_id_env", "CANDLELAB_TELEGRAM_CHAT_ID")):
        name = str(cfg.get(key) or default)
        if not env.get(name, "").strip():
            raise UserError(
                f"the telegram sink needs the environment variable {name} (set it, or drop telegram "
                f"from runtime.notify.sinks)",
                f"runtime.notify.telegram.{key}",
            )
        values[key] = env[name].strip()
    return TelegramSink(
        values["token_env"],
        values["chat_id_env"],
        base_url=cfg.get("base_url") or "https://api.telegram.org",
        tiers=cfg.get("tiers", ["high"]),
        min_level=cfg.get("min_level") or "info",
        retries=cfg.get("retries", 3),
        backoff=cfg.get("backoff_seconds", 1.0),
        timeout=cfg.get("timeout_seconds", 5.0),
        max_wait=cfg.get("max_wait_seconds", 30.0),
    )


def build_sinks(cfg: Mapping) -> list[Callable[[dict], None]]:
    """Sinks from ``cfg.sinks`` (``[log]``, ``[log, webhook, telegram]``); ``webhook`` needs ``cfg.webhook_url``,
    ``telegram`` the environment variables ``cfg.telegram`` names."""
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
        elif name == "telegram":
            telegram = cfg.get("telegram")
            sinks.append(telegram_sink(dict(telegram.items()) if telegram is not None else None))
        else:
            raise UserError(f"unknown sink {name!r}; choose from {', '.join(SINKS)}", "runtime.notify.sinks")
    return sinks


class Notifier:
    """Sends each notification to every sink; a sink that raises is logged and the others still run."""

    def __init__(self, sinks):
        self.sinks = list(sinks)

    def notify(self, kind: str, message: str, level: str = "info", **fields) -> None:
        event = {
            **fields,
            "kind": kind,
            "level": level,
            "message": message,
            "sent_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:  # a broken sink must not stop trading
                log.exception("notify: sink %r failed for %s event", sink, kind)
