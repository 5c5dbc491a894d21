"""Run the examples of docs/pages/django-integration.md in one Django process.

``python docs_examples.py PAGE PORT``: the block after
``<!-- django-example: settings -->`` is the project's settings (the SMTP
server is moved to 127.0.0.1:PORT, plain text, no credentials: the test's
aiosmtpd), then every block after ``<!-- django-example -->`` runs, in order,
in one namespace. Prints "examples: N" when all ran.
"""

import re
import sys
import warnings

import django
from django.conf import settings

warnings.simplefilter("ignore", DeprecationWarning)  # Django 6.1's EMAIL_* ones
warnings.simplefilter("ignore", PendingDeprecationWarning)

BLOCK = re.compile(
    r"<!-- django-example(: settings)? -->\n```py\n(.*?)^```", re.DOTALL | re.MULTILINE
)

page, port = sys.argv[1], int(sys.argv[2])
with open(page, encoding="utf-8") as file:
    blocks = BLOCK.findall(file.read())
assert blocks, "no examples found"
assert blocks[0][0], "the first example must be the settings"

project: dict = {}
exec(blocks[0][1], project)  # noqa: S102 - our own documentation
values = {name: value for name, value in project.items() if name.isupper()}
values.update(
    EMAIL_HOST="127.0.0.1",
    EMAIL_PORT=port,
    EMAIL_USE_TLS=False,
    EMAIL_HOST_USER="",
    EMAIL_HOST_PASSWORD="",
    SECRET_KEY="docs-examples",
    INSTALLED_APPS=["django.contrib.auth", "django.contrib.contenttypes"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    # The password-reset e-mail's templates, as a project (or the admin) has.
    TEMPLATES=[
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "OPTIONS": {
                "loaders": [
                    (
                        "django.template.loaders.locmem.Loader",
                        {
                            "registration/password_reset_subject.txt": (
                                "Password reset on {{ site_name }}"
                            ),
                            "registration/password_reset_email.html": (
                                "{{ protocol }}://{{ domain }}"
                                "/reset/{{ uid }}/{{ token }}/"
                            ),
                        },
                    )
                ]
            },
        }
    ],
    PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    ALLOWED_HOSTS=["testserver"],
)
if django.VERSION < (6,):
    values["ADMINS"] = [("", address) for address in values.get("ADMINS", [])]
settings.configure(**values)
django.setup()
from django.core.management import call_command

call_command("migrate", verbosity=0)

namespace: dict = {"__name__": "docs_django_integration"}
for number, (_, code) in enumerate(blocks[1:], 2):
    exec(compile(code, f"{page}, example {number}", "exec"), namespace)  # noqa: S102
print(f"examples: {len(blocks)}")
