"""Settings of the test project: no database, no sessions, one app."""

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
ROOT_URLCONF = "djangoapp.urls"
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {}
USE_TZ = True
# The service's own setting, as before: which platform's credentials to use
# (an instance of plugins.toml; CREDHOST_CONFIG says where the file is).
CREDENTIALS = "local"
# Requests above this size are spooled to a temporary file by Django
# (TemporaryUploadedFile); below it they stay in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2621440
