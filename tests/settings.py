"""Settings for the test suite: the project's own, with a throwaway secret key.

DATABASE_URL still decides the database, so the same suite runs on SQLite and PostgreSQL.
"""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-not-a-secret-" + "x" * 32)
os.environ.setdefault("OPENAI_API_KEY", "sk-test-key-never-shown")
os.environ.setdefault("OPENAI_BASE_URL", "https://api.openai.test/v1")

from batchweb.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
OPENAI_MAX_RETRIES = 2
STATIC_ROOT = None  # nothing is collected in tests; WhiteNoise serves from the finders
WHITENOISE_USE_FINDERS = True
