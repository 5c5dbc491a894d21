"""The same project under Django's test runner (``manage.py test``): Django
swaps in its locmem backend, and every send, Django's and asyncmail's, sync
and async, lands in django.core.mail.outbox."""

import asyncio
from io import StringIO

from django.contrib.auth.models import User
from django.core import mail
from django.core.management import call_command
from django.test import TestCase, override_settings

import asyncmail
import asyncmail.django


class OutboxTests(TestCase):
    def test_sync_view(self):
        response = self.client.get("/welcome/?to=ada@example.com")
        self.assertEqual(response.content, b"1")
        self.assertEqual(len(mail.outbox), 1)
        self.assertEqual(mail.outbox[0].subject, "Welcome, Zoë")
        self.assertEqual(mail.outbox[0].to, ["ada@example.com"])

    async def test_async_view_asyncmail_api(self):
        response = await self.async_client.get("/welcome-async/")
        self.assertEqual(response.content, b"1")
        self.assertEqual(len(mail.outbox), 1)
        sent = mail.outbox[0]
        self.assertEqual(sent.subject, "Welcome (async)")
        self.assertEqual(sent.to, ["bob@example.com"])
        self.assertEqual(sent.from_email, "Shop <shop@example.com>")

    async def test_async_view_django_messages(self):
        response = await self.async_client.get("/receipt-async/")
        self.assertEqual(response.content, b"1")
        self.assertEqual(len(mail.outbox), 1)
        self.assertEqual(mail.outbox[0].alternatives[0][1], "text/html")
        self.assertEqual(mail.outbox[0].attachments[0][0], "receipt.csv")

    def test_blocking_asyncmail_api(self):
        self.assertEqual(
            asyncmail.send_mail("Blocking", "body", None, ["dan@example.com"]), 1
        )
        message = asyncmail.EmailMessage("Message", "body", to=["eve@example.com"])
        self.assertEqual(message.send(), 1)
        self.assertEqual([m.subject for m in mail.outbox], ["Blocking", "Message"])

    def test_asyncmail_message_asend(self):
        message = asyncmail.EmailMessage("Async", "body", to=["fay@example.com"])
        self.assertEqual(asyncio.run(message.asend()), 1)
        self.assertEqual(mail.outbox[0].subject, "Async")

    def test_mail_admins_uses_project_settings(self):
        asyncmail.mail_admins("Disk full", "90%")
        self.assertEqual(mail.outbox[0].subject, "[shop] Disk full")
        self.assertEqual(mail.outbox[0].from_email, "errors@example.com")
        # Django 6 ADMINS are strings; 5.2 pairs keep their name.
        self.assertIn(
            mail.outbox[0].to, (["ops@example.com"], ["Ops <ops@example.com>"])
        )

    def test_management_command(self):
        call_command("sendreport", 3, stdout=StringIO())
        self.assertEqual(len(mail.outbox), 3)

    def test_password_reset(self):
        User.objects.create_user("ada", "ada@example.com", "old password")
        response = self.client.post("/password-reset/", {"email": "ada@example.com"})
        self.assertEqual(response.status_code, 302)
        self.assertEqual(len(mail.outbox), 1)
        self.assertIn("/reset/", mail.outbox[0].body)

    @override_settings(DEFAULT_FROM_EMAIL="Overridden <o@example.com>")
    def test_override_settings_is_followed(self):
        asyncmail.send_mail("Hi", "body", None, ["gus@example.com"])
        self.assertEqual(mail.outbox[0].from_email, "Overridden <o@example.com>")
        self.assertEqual(
            asyncmail.settings.DEFAULT_FROM_EMAIL, "Overridden <o@example.com>"
        )

    def test_configure_still_wins(self):
        with asyncmail.settings.override(DEFAULT_FROM_EMAIL="conf@example.com"):
            asyncmail.send_mail("Hi", "body", None, ["hal@example.com"])
        self.assertEqual(mail.outbox[0].from_email, "conf@example.com")
