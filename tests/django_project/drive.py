"""Drive the project as its users would, with mail going to a real server.

Run as ``python drive.py`` from the project directory, with TEST_SMTP_PORT
(the test's aiosmtpd) and TEST_DB set. Prints a JSON object of what each
step returned; the test checks what the server received. ``python drive.py
confirm PATH`` follows a password-reset link instead.
"""

import asyncio
import json
import os
import sys
from io import StringIO

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

import django

django.setup()

from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import AsyncClient, Client

results = {}
if sys.argv[1:2] == ["confirm"]:
    client = Client()
    response = client.get(sys.argv[2])
    results["confirm_status"] = response.status_code
    results["confirm_location"] = response.get("Location", "")
    follow = client.get(response["Location"]) if response.status_code == 302 else None
    results["form_status"] = follow.status_code if follow is not None else None
    print(json.dumps(results))
    sys.exit(0)

call_command("migrate", verbosity=0)
User.objects.create_user("ada", "ada@example.com", "old password")

client = Client(raise_request_exception=False)
results["wsgi_sync_view"] = client.get("/welcome/?to=ada@example.com").content.decode()


async def async_requests():
    async_client = AsyncClient()
    sync_under_asgi = await async_client.get("/welcome/?to=asgi@example.com")
    async_view = await async_client.get("/welcome-async/")
    receipt = await async_client.get("/receipt-async/")
    return sync_under_asgi, async_view, receipt


sync_under_asgi, async_view, receipt = asyncio.run(async_requests())
results["asgi_sync_view"] = sync_under_asgi.content.decode()
results["async_view"] = async_view.content.decode()
results["async_receipt"] = receipt.content.decode()

out = StringIO()
call_command("sendreport", 5, stdout=out)
results["command"] = out.getvalue().strip()

reset = client.post("/password-reset/", {"email": "ada@example.com"})
results["reset_status"] = reset.status_code

crash = client.get("/crash/")
results["crash_status"] = crash.status_code
print(json.dumps(results))
