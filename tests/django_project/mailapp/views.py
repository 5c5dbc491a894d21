"""Views that send mail the ways a Django project does."""

from django.core import mail
from django.http import HttpResponse

import asyncmail
import asyncmail.django

#: Fixed Date and Message-ID, so that the bytes on the server are known.
FIXED = {
    "Date": "Tue, 01 Dec 2026 10:00:00 +0000",
    "Message-ID": "<welcome@example.com>",
}


def welcome(request):
    """A WSGI / ASGI sync view: Django's API, sent through asyncmail's backend."""
    message = mail.EmailMessage(
        "Welcome, Zoë",
        "Thanks for signing up.\n",
        None,
        [request.GET.get("to", "ada@example.com")],
        headers=FIXED,
    )
    sent = message.send()
    return HttpResponse(str(sent))


async def welcome_async(request):
    """An async view: asyncmail's API, reading the project's settings."""
    sent = await asyncmail.asend_mail(
        "Welcome (async)",
        "Sent from an async view.\n",
        None,
        [request.GET.get("to", "bob@example.com")],
    )
    return HttpResponse(str(sent))


async def receipt_async(request):
    """An async view sending Django's own message objects."""
    message = mail.EmailMultiAlternatives(
        "Receipt", "Total: 3 EUR\n", None, ["carol@example.com"]
    )
    message.attach_alternative("<p>Total: <b>3 EUR</b></p>", "text/html")
    message.attach("receipt.csv", "item,price\nbook,3\n", "text/csv")
    sent = await asyncmail.django.asend_messages([message])
    return HttpResponse(str(sent))


def crash(request):
    """An error: Django's AdminEmailHandler mails ADMINS about it."""
    raise RuntimeError("the crash view crashed")
