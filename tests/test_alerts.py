"""Alert channels: a real loopback HTTP server (webhook), a real loopback SMTP server
(aiosmtpd); Slack is only built, never called (no network here: the test says so)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from catalog_sync import alerts

SUMMARY = {"dead_lettered": 3, "run_id": "scheduled__2026-01-01", "target": "voicebot_default"}


@pytest.fixture(autouse=True)
def no_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (alerts.ENV_EMAIL, alerts.ENV_SLACK_CONN_ID, alerts.ENV_WEBHOOK_CONN_ID):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict]]:
    """A loopback HTTP server recording JSON bodies; configured as the webhook channel."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": server.server_port, "schema": "http"}
    monkeypatch.setenv("AIRFLOW_CONN_ALERT_HOOK", json.dumps(conn))
    monkeypatch.setenv(alerts.ENV_WEBHOOK_CONN_ID, "alert_hook")
    yield received
    server.shutdown()


def test_no_channel_configured_means_no_notifiers() -> None:
    assert alerts.failure_notifiers() == []
    assert alerts.alert_dead_letters(SUMMARY) == 0


def test_the_webhook_receives_the_dead_letter_alert_as_json(webhook: list[dict]) -> None:
    sent = alerts.alert_dead_letters(SUMMARY)

    assert sent == 1
    assert webhook == [
        {
            "text": "catalog-sync: 3 op(s) were dead-lettered in run scheduled__2026-01-01 "
            "for target voicebot_default",
            "event": "dead_lettered",
            "count": 3,
            "run_id": "scheduled__2026-01-01",
            "target": "voicebot_default",
        }
    ]


def test_nothing_is_sent_when_nothing_was_dead_lettered(webhook: list[dict]) -> None:
    assert alerts.alert_dead_letters({**SUMMARY, "dead_lettered": 0}) == 0
    assert webhook == []


def test_failure_notifiers_include_the_webhook(webhook: list[dict]) -> None:
    [notifier] = alerts.failure_notifiers()

    assert isinstance(notifier, alerts.WebhookNotifier)
    assert notifier.http_conn_id == "alert_hook"
    assert "{{ ti.task_id }}" in notifier.text


def test_the_slack_notifier_uses_the_configured_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Built only: sending would need Slack's servers, which this machine cannot reach.
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    monkeypatch.setenv(alerts.ENV_SLACK_CONN_ID, "slack_alerts")

    [notifier] = alerts.failure_notifiers()

    assert isinstance(notifier, SlackWebhookNotifier)
    assert notifier.slack_webhook_conn_id == "slack_alerts"


def test_email_alerts_are_delivered_over_smtp(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiosmtpd.controller import Controller

    messages: list = []

    class Collect:
        async def handle_DATA(self, server, session, envelope) -> str:
            messages.append(envelope)
            return "250 OK"

    with socket.socket() as probe:  # a free loopback port (aiosmtpd needs one up front)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Collect(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        conn = {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "sync@shop.test"},
        }
        monkeypatch.setenv("AIRFLOW_CONN_ALERT_SMTP", json.dumps(conn))
        monkeypatch.setenv(alerts.ENV_SMTP_CONN_ID, "alert_smtp")
        monkeypatch.setenv(alerts.ENV_EMAIL, "ops@shop.test, dev@shop.test")

        sent = alerts.alert_dead_letters(SUMMARY)
    finally:
        controller.stop()

    assert sent == 1
    [envelope] = messages
    assert sorted(envelope.rcpt_tos) == ["dev@shop.test", "ops@shop.test"]
    assert b"3 op(s) were dead-lettered" in envelope.content
