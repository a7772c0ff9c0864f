"""The backend path django-uwsgi-cache and uWSGI's docs use: 'BACKEND': 'uwsgicache.UWSGICache'."""
from uwsgi_django_cache import UWSGICache  # noqa: F401
