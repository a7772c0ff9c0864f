"""A Django (3.2+) cache backend on the uWSGI-compatible cache: this server's shared-memory caches,
or uWSGI 2.0's.

Inside an application hosted by the server (or by uWSGI) it calls the `uwsgi` module; in any other
Python process it speaks the cache protocol (modifier1 111 / modifier2 17) to a server with the
pure-Python client in uwsgi_cache_client.py.

    CACHES = {
        "default": {
            "BACKEND": "uwsgi_django_cache.UWSGICache",   # or "uwsgicache.UWSGICache"
            "LOCATION": "mycache",                         # see below
            "TIMEOUT": 300,
            "KEY_PREFIX": "site1",
        }
    }

LOCATION (the uwsgi module's `cache` argument):
    ""  or absent          the default cache of the server hosting the app
    "name"                 a cache of the hosting server
    "name@host:port"       cache `name` on that server ("@host:port": its default cache; a path
                           instead of host:port is a UNIX socket)
    "host:port" / "/path"  that server's default cache
Outside a hosted app LOCATION must name a server. OPTIONS: {"SOCKET_TIMEOUT": 4.0} (seconds, client
only).

Semantics are Django's, not the raw cache's:
- values are pickled; a timeout of None stores forever, 0 (or less) expires at once, a positive
  timeout is honoured to the sub-second (each stored value carries its absolute expiry, checked on
  read) while the server's sweeper reclaims the memory later;
- add() does not overwrite a live key (the cache's own `set`); set() overwrites (`update`);
- incr()/decr()/touch() read then write: atomic against nothing, as BaseCache's defaults;
- a value larger than the cache's largest value (its blocksize, 64 KiB by default, or blocksize x blocks
  with bitmap=1; pickling included) is not stored:
  set() silently, set_many() lists the key, as Django's contract says;
- connection failures of the client raise OSError (they are configuration errors, not misses).
"""
import pickle
import struct
import time

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, InvalidCacheBackendError

try:
    import uwsgi
except ImportError:  # a plain Python process: use the protocol client
    uwsgi = None

_EXPIRY = struct.Struct("<d")  # absolute expiry (time.time()), 0.0 = never


def _split_location(location):
    """(cache name, server address or None) from a LOCATION string."""
    if "@" in location:
        name, address = location.split("@", 1)
        return name, address
    if ":" in location or "/" in location:
        return "", location
    return location, None


class _ModuleTransport:
    """The `uwsgi` module of the hosting server; the cache argument is passed through."""

    def __init__(self, name, address):
        self.spec = name if address is None else "%s@%s" % (name, address)

    def get(self, key):
        return uwsgi.cache_get(key, self.spec)

    def add(self, key, value, expires):
        return uwsgi.cache_set(key, value, expires, self.spec) is True

    def put(self, key, value, expires):
        return uwsgi.cache_update(key, value, expires, self.spec) is True

    def delete(self, key):
        return uwsgi.cache_del(key, self.spec) is True

    def clear(self):
        return uwsgi.cache_clear(self.spec) is True


class _ClientTransport:
    """The cache protocol over a socket, for processes outside the server."""

    def __init__(self, name, address, timeout):
        from uwsgi_cache_client import CacheClient
        self.name = name
        self.client = CacheClient(address, timeout=timeout)

    def get(self, key):
        return self.client.get(key, self.name)

    def add(self, key, value, expires):
        return self.client.set(key, value, expires, self.name)

    def put(self, key, value, expires):
        return self.client.update(key, value, expires, self.name)

    def delete(self, key):
        return self.client.delete(key, self.name)

    def clear(self):
        return self.client.clear(self.name)


class UWSGICache(BaseCache):
    pickle_protocol = pickle.HIGHEST_PROTOCOL

    def __init__(self, location, params):
        super().__init__(params)
        name, address = _split_location(location or "")
        options = params.get("OPTIONS", {})
        if uwsgi is not None:
            self._transport = _ModuleTransport(name, address)
        elif address is not None:
            self._transport = _ClientTransport(name, address, float(options.get("SOCKET_TIMEOUT", 4.0)))
        else:
            raise InvalidCacheBackendError(
                "UWSGICache: not running inside the server (no uwsgi module), so LOCATION must name a "
                "server: 'name@host:port', '@host:port', 'host:port' or a UNIX socket path, not %r" % location)

    # ---- the stored record: expiry header + pickle

    def get_backend_timeout(self, timeout=DEFAULT_TIMEOUT):
        """Absolute expiry (time.time()) for a Django timeout; None = never."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        return time.time() + timeout

    @staticmethod
    def _cache_seconds(expires_at):
        """The cache's own expiry (whole seconds from now, 0 = never): a little after ours."""
        if expires_at is None:
            return 0
        return max(1, int(expires_at - time.time()) + 2)

    def _pack(self, value, expires_at):
        return _EXPIRY.pack(expires_at or 0.0) + pickle.dumps(value, self.pickle_protocol)

    def _load(self, key):
        """(value, expires_at) of a live record, or None; deletes an expired one."""
        raw = self._transport.get(key)
        if raw is None or len(raw) < _EXPIRY.size:
            return None
        (expires_at,) = _EXPIRY.unpack_from(raw)
        if expires_at and expires_at <= time.time():
            self._transport.delete(key)
            return None
        return pickle.loads(raw[_EXPIRY.size:]), (expires_at or None)

    def _store(self, key, value, expires_at):
        """Overwrites; an already expired record is removed instead of stored."""
        if expires_at is not None and expires_at <= time.time():
            self._transport.delete(key)
            return True
        return self._transport.put(key, self._pack(value, expires_at), self._cache_seconds(expires_at))

    # ---- Django's API

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_key(key, version=version)
        self.validate_key(key)
        expires_at = self.get_backend_timeout(timeout)
        record = self._pack(value, expires_at)
        if self._load(key) is not None:  # also removes an expired record the cache still holds
            return False
        if expires_at is not None and expires_at <= time.time():
            return True  # Django: added, and gone at once
        return self._transport.add(key, record, self._cache_seconds(expires_at))

    def get(self, key, default=None, version=None):
        key = self.make_key(key, version=version)
        self.validate_key(key)
        found = self._load(key)
        return default if found is None else found[0]

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_key(key, version=version)
        self.validate_key(key)
        self._store(key, value, self.get_backend_timeout(timeout))

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        key = self.make_key(key, version=version)
        self.validate_key(key)
        found = self._load(key)
        if found is None:
            return False
        return self._store(key, found[0], self.get_backend_timeout(timeout))

    def delete(self, key, version=None):
        key = self.make_key(key, version=version)
        self.validate_key(key)
        live = self._load(key) is not None
        return self._transport.delete(key) and live

    def has_key(self, key, version=None):
        key = self.make_key(key, version=version)
        self.validate_key(key)
        return self._load(key) is not None

    def incr(self, key, delta=1, version=None):
        key = self.make_key(key, version=version)
        self.validate_key(key)
        found = self._load(key)
        if found is None:
            raise ValueError("Key '%s' not found" % key)
        value, expires_at = found
        new_value = value + delta
        self._store(key, new_value, expires_at)  # keeps the expiry, as Django's own backends do
        return new_value

    def decr(self, key, delta=1, version=None):
        return self.incr(key, -delta, version=version)

    def get_many(self, keys, version=None):
        found = {}
        for key in keys:
            made = self.make_key(key, version=version)
            self.validate_key(made)
            record = self._load(made)
            if record is not None:
                found[key] = record[0]
        return found

    def set_many(self, data, timeout=DEFAULT_TIMEOUT, version=None):
        expires_at = self.get_backend_timeout(timeout)
        failed = []
        for key, value in data.items():
            made = self.make_key(key, version=version)
            self.validate_key(made)
            if not self._store(made, value, expires_at):
                failed.append(key)
        return failed

    def delete_many(self, keys, version=None):
        for key in keys:
            self.delete(key, version=version)

    def clear(self):
        return self._transport.clear()
