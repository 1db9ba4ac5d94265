"""Alerts through Airflow notifiers, chosen by environment variables (docs/operations.md).

- `CATALOG_SYNC_ALERT_EMAIL`: comma-separated recipients, sent with the SMTP provider's
  `SmtpNotifier` over the smtp connection `CATALOG_SYNC_ALERT_SMTP_CONN_ID`
  (default `smtp_default`);
- `CATALOG_SYNC_ALERT_SLACK_CONN_ID`: a Slack incoming-webhook connection
  (`SlackWebhookNotifier` of the Slack provider);
- `CATALOG_SYNC_ALERT_WEBHOOK_CONN_ID`: an http connection; `WebhookNotifier` POSTs
  `{"text": ..., "event": ..., ...}` as JSON to it.

A message names the DAG, run, task and target and the type of the failure, never an
exception's text (which may quote row values) and never a payload or the secret.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseNotifier

log = logging.getLogger(__name__)

ENV_EMAIL = "CATALOG_SYNC_ALERT_EMAIL"
ENV_SMTP_CONN_ID = "CATALOG_SYNC_ALERT_SMTP_CONN_ID"
ENV_SLACK_CONN_ID = "CATALOG_SYNC_ALERT_SLACK_CONN_ID"
ENV_WEBHOOK_CONN_ID = "CATALOG_SYNC_ALERT_WEBHOOK_CONN_ID"
DEFAULT_SMTP_CONN_ID = "smtp_default"


class WebhookNotifier(BaseNotifier):
    """POST one JSON object to an http connection (its host + schema, plus `endpoint`)."""

    template_fields = ("text",)

    def __init__(
        self,
        http_conn_id: str,
        text: str,
        fields: Mapping[str, Any] | None = None,
        endpoint: str = "",
    ) -> None:
        super().__init__()
        self.http_conn_id = http_conn_id
        self.text = text
        self.fields = dict(fields or {})
        self.endpoint = endpoint

    def notify(self, context: Any) -> None:
        from airflow.providers.http.hooks.http import HttpHook

        HttpHook(method="POST", http_conn_id=self.http_conn_id).run(
            self.endpoint, json={"text": self.text, **self.fields}
        )


def _recipients() -> list[str]:
    raw = os.environ.get(ENV_EMAIL, "")
    return [address.strip() for address in raw.split(",") if address.strip()]


def notifiers(subject: str, text: str, fields: Mapping[str, Any] | None = None) -> list[Any]:
    """One notifier per configured channel, all carrying `text` (Jinja-templated)."""
    chosen: list[Any] = []
    recipients = _recipients()
    if recipients:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        chosen.append(
            SmtpNotifier(
                to=recipients,
                smtp_conn_id=os.environ.get(ENV_SMTP_CONN_ID) or DEFAULT_SMTP_CONN_ID,
                subject=subject,
                html_content=text,
            )
        )
    slack = os.environ.get(ENV_SLACK_CONN_ID, "").strip()
    if slack:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        chosen.append(SlackWebhookNotifier(slack_webhook_conn_id=slack, text=text))
    webhook = os.environ.get(ENV_WEBHOOK_CONN_ID, "").strip()
    if webhook:
        chosen.append(WebhookNotifier(webhook, text, fields))
    return chosen


FAILURE_TEXT = (
    "catalog-sync: task {{ ti.task_id }} of DAG {{ dag.dag_id }} failed in run {{ run_id }}"
    "{% if exception %} ({{ exception.__class__.__name__ }}){% endif %}; see the task log"
)


def failure_notifiers() -> list[Any]:
    """For `on_failure_callback` of the DAGs; empty when no channel is configured."""
    return notifiers("catalog-sync: a task failed", FAILURE_TEXT, {"event": "task_failed"})


def dead_letter_text(count: int, run_id: str, target: str) -> str:
    return f"catalog-sync: {count} op(s) were dead-lettered in run {run_id} for target {target}"


def alert_dead_letters(
    context_or_summary: Mapping[str, Any], *, count: int | None = None, target: str | None = None
) -> int:
    """Send "N ops were dead-lettered in run X for target T" on every channel.

    Takes a summary `{"dead_lettered": N, "run_id": X, "target": T}` or an Airflow
    context (then pass `count` and `target`). Returns how many channels were notified;
    nothing is sent when N is 0. A channel that fails is logged and the others still go.
    """
    summary = context_or_summary
    number = int(count if count is not None else summary.get("dead_lettered", 0) or 0)
    if number <= 0:
        return 0
    run_id = str(summary.get("run_id") or "?")
    where = str(target or summary.get("target") or "?")
    text = dead_letter_text(number, run_id, where)
    fields = {"event": "dead_lettered", "count": number, "run_id": run_id, "target": where}
    sent = 0
    for notifier in notifiers(text, text, fields):
        try:
            notifier.notify(dict(summary))
        except Exception as exc:
            log.error("the %s alert failed: %s", type(notifier).__name__, type(exc).__name__)
            continue
        sent += 1
    return sent
