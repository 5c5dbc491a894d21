"""A startproject-like settings module for the Django integration tests.

The SMTP server's port comes from the environment (the test starts an
aiosmtpd on 127.0.0.1). ASYNCMAIL_TEST_MODE picks how mail is configured:
"email_backend" (EMAIL_BACKEND + EMAIL_*), or "mailers" (Django 6.1 MAILERS).
"""

import os
from pathlib import Path

import django

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "django-insecure-asyncmail-tests"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "mailapp",  # first: its registration/ templates win over django.contrib.auth's
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "urls"
WSGI_APPLICATION = "wsgi.application"
ASGI_APPLICATION = "asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("TEST_DB", str(BASE_DIR / "db.sqlite3")),
    }
}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DEFAULT_FROM_EMAIL = "Shop <shop@example.com>"
SERVER_EMAIL = "errors@example.com"
# Django 6 takes address strings; 5.2 wants (name, address) pairs.
ADMINS = ["ops@example.com"] if django.VERSION >= (6,) else [("Ops", "ops@example.com")]
EMAIL_SUBJECT_PREFIX = "[shop] "

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "mail_admins": {
            "level": "ERROR",
            "class": "django.utils.log.AdminEmailHandler",
        }
    },
    "loggers": {
        "django.request": {
            "handlers": ["mail_admins"],
            "level": "ERROR",
            "propagate": False,
        }
    },
}

_PORT = int(os.environ.get("TEST_SMTP_PORT", "25"))

if os.environ.get("ASYNCMAIL_TEST_MODE") == "mailers":
    MAILERS = {
        "default": {
            "BACKEND": "asyncmail.django.EmailBackend",
            "OPTIONS": {"host": "127.0.0.1", "port": _PORT, "max_connections": 4},
        }
    }
else:
    EMAIL_BACKEND = "asyncmail.django.EmailBackend"
    EMAIL_HOST = "127.0.0.1"
    EMAIL_PORT = _PORT
