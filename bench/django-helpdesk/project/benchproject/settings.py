"""Minimal Django project hosting django-helpdesk for the mailrobot benchmark.

Set up as django-helpdesk's installation docs say (docs/install.rst, docs/teams.rst,
docs/configuration.rst): contrib auth/contenttypes/sessions/sites/admin/humanize,
SITE_ID, the request context processor, rest_framework for its API, and teams mode
off so that pinax-teams is not needed.

Environment:
  HELPDESK_DB             SQLite file (default /tmp/helpdesk-bench.sqlite3)
  HELPDESK_MEDIA_ROOT     where ticket attachments are written (default /tmp/helpdesk-bench-media)
  HELPDESK_SQLITE_WAL     1: put the SQLite database in WAL mode (default: Django's defaults)
  HELPDESK_EMAIL_BACKEND  Django e-mail backend for the notifications django-helpdesk sends
                          (default locmem: messages are built in full but kept in memory)
"""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "bench-only-not-secret-0b1f5d6c9a7e4f2b8c3d"
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = [
    "django.contrib.admin",  # required for helpdesk admin/maintenance
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",  # required for determining domain url for use in emails
    "django.contrib.humanize",  # required for elapsed time formatting
    "rest_framework",  # required for the helpdesk API
    "helpdesk",
]

# Teams mode defaults to on and then needs pinax-teams; the docs say to turn it off
# when not used.
HELPDESK_TEAMS_MODE_ENABLED = False

SITE_ID = 1

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "benchproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",  # required by helpdesk
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("HELPDESK_DB", "/tmp/helpdesk-bench.sqlite3"),
    }
}
# Django's SQLite defaults (rollback journal, synchronous=FULL, one commit per save) unless
# HELPDESK_SQLITE_WAL=1, which switches the database to WAL (fewer fsyncs per commit).
if os.environ.get("HELPDESK_SQLITE_WAL") == "1":
    DATABASES["default"]["OPTIONS"] = {"init_command": "PRAGMA journal_mode=WAL;"}

DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = str(BASE_DIR / "static")
MEDIA_URL = "/media/"
MEDIA_ROOT = os.environ.get("HELPDESK_MEDIA_ROOT", "/tmp/helpdesk-bench-media")

LOGIN_URL = "helpdesk:login"
LOGIN_REDIRECT_URL = "helpdesk:home"

DEFAULT_FROM_EMAIL = "helpdesk@example.test"
SERVER_EMAIL = "helpdesk@example.test"
EMAIL_BACKEND = os.environ.get(
    "HELPDESK_EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend"
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
