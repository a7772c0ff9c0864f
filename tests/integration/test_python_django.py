#!/usr/bin/env python3
"""The Django cache backend (python/uwsgi_django_cache.py) against Django 3.2's cache test expectations
for get, set, add, delete, has_key, clear, touch, incr, decr, get_many, set_many, delete_many, timeouts
(None = forever, 0 = expire now, positive = honoured), versions, key prefixes. Run twice: inside a
Django application hosted by the server (through a real WSGI request; the backend uses `import uwsgi`),
and from this plain Python process against the running server (the backend uses the protocol client).
Skips when Debian's python3-django is not installed."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SOURCE_DIR, Server, check, peer_missing, free_port, make_temp_dir, packet, request, run_tests,
                     vars_block)

CHECKS = r'''
import datetime, time
from django.core.cache.backends.base import BaseCache

def run(cache, other):
    """Django's cache test expectations; returns the list of failures."""
    failures = []
    def eq(got, want, what):
        if got != want:
            failures.append("%s: got %r, want %r" % (what, got, want))
    cache.clear()
    other.clear()
    cache.set("key", "value")
    eq(cache.get("key"), "value", "set/get")
    eq(cache.get("does_not_exist"), None, "miss")
    eq(cache.get("does_not_exist", "bang!"), "bang!", "miss with default")
    eq(cache.add("addkey1", "value"), True, "add new")
    eq(cache.add("addkey1", "newvalue"), False, "add existing")
    eq(cache.get("addkey1"), "value", "add did not overwrite")
    eq(other.get("key"), None, "another KEY_PREFIX does not see the key")
    cache.set("somekey", "value")
    eq(cache.get("somekey", version=2), None, "another version does not see the key")
    cache.set("answer1", 42, version=2)
    eq(cache.get("answer1"), None, "version 1 miss")
    eq(cache.get("answer1", version=2), 42, "version 2 hit")
    cache.set_many({"a": "a", "b": "b", "c": "c", "d": "d"})
    eq(cache.get_many(["a", "c", "d"]), {"a": "a", "c": "c", "d": "d"}, "get_many")
    eq(cache.get_many(["a", "b", "e"]), {"a": "a", "b": "b"}, "get_many with a miss")
    eq(cache.get_many(iter(["a", "b", "e"])), {"a": "a", "b": "b"}, "get_many of an iterator")
    cache.set_many({"key1": "spam", "key2": "eggs"})
    eq(cache.delete("key1"), True, "delete existing")
    eq(cache.get("key1"), None, "deleted")
    eq(cache.get("key2"), "eggs", "the other key survives")
    eq(cache.delete("key1"), False, "delete missing")
    cache.set("hello1", "goodbye1")
    eq(cache.has_key("hello1"), True, "has_key")
    eq(cache.has_key("goodbye1"), False, "has_key miss")
    cache.set("no_expiry", "here", None)
    eq(cache.has_key("no_expiry"), True, "has_key, no expiry")
    eq("hello1" in cache, True, "__contains__")
    cache.set("answer", 41)
    eq(cache.incr("answer"), 42, "incr")
    eq(cache.get("answer"), 42, "incr stored")
    eq(cache.incr("answer", 10), 52, "incr 10")
    eq(cache.incr("answer", -10), 42, "incr -10")
    try:
        cache.incr("does_not_exist")
        failures.append("incr of a missing key did not raise ValueError")
    except ValueError:
        pass
    cache.set("answer", 43)
    eq(cache.decr("answer"), 42, "decr")
    eq(cache.decr("answer", 10), 32, "decr 10")
    eq(cache.decr("answer", -10), 42, "decr -10")
    try:
        cache.decr("does_not_exist")
        failures.append("decr of a missing key did not raise ValueError")
    except ValueError:
        pass
    stuff = {"string": "this is a string", "int": 42, "list": [1, 2, 3, 4], "tuple": (1, 2, 3, 4),
             "dict": {"A": 1, "B": 2}, "date": datetime.date(2024, 1, 2), "bytes": b"\x00\xff" * 10}
    cache.set("stuff", stuff)
    eq(cache.get("stuff"), stuff, "pickled data types")
    for key, value in {"ascii": "ascii_value", "unicode_ascii": "I\u00f1t\u00ebrn\u00e2ti\u00f4n\u00e0liz\u00e6ti\u00f8n1",
                       "I\u00f1t\u00ebrn\u00e2ti\u00f4n\u00e0liz\u00e6ti\u00f8n": "I\u00f1t\u00ebrn\u00e2ti\u00f4n\u00e0liz\u00e6ti\u00f8n2",
                       "ascii2": {"x": 1}}.items():
        cache.set(key, value)
        eq(cache.get(key), value, "unicode key %r" % key)
        eq(cache.delete(key), True, "delete unicode key %r" % key)
        eq(cache.add(key, value), True, "add unicode key %r" % key)
        eq(cache.get(key), value, "get added unicode key %r" % key)
    cache.set_many({"key1": "spam", "key2": "eggs", "key3": "ham"})
    cache.delete_many(["key1", "key2"])
    eq((cache.get("key1"), cache.get("key2"), cache.get("key3")), (None, None, "ham"), "delete_many")
    cache.set_many({"key1": "spam", "key2": "eggs"})
    cache.clear()
    eq((cache.get("key1"), cache.get("key2")), (None, None), "clear")
    eq(cache.set_many({"key1": "spam"}), [], "set_many returns the failed keys")
    big = "x" * 100000
    eq(cache.set_many({"big": big, "small": "s"}), ["big"], "a value over the blocksize is reported")
    eq(cache.get("big"), None, "a value over the blocksize is not stored")
    cache.set("key1", "eggs", 60 * 60 * 24 * 30 + 1)
    eq(cache.get("key1"), "eggs", "long timeout")
    eq(cache.add("key2", "ham", 60 * 60 * 24 * 30 + 1), True, "add, long timeout")
    eq(cache.get("key2"), "ham", "add, long timeout stored")
    cache.set("key1", "eggs", None)
    eq(cache.get("key1"), "eggs", "forever timeout")
    eq(cache.add("key2", "ham", None), False, "add existing, forever")
    eq(cache.add("key3", "ham", None), True, "add, forever")
    eq(cache.get("key3"), "ham", "add, forever stored")
    cache.set("key1", "eggs", 0)
    eq(cache.get("key1"), None, "zero timeout: expired at once")
    eq(cache.add("key4", "ham", 0), True, "add, zero timeout")
    eq(cache.get("key4"), None, "add, zero timeout: expired")
    cache.set_many({"key5": "sausage", "key6": "lobster bisque"}, 0)
    eq((cache.get("key5"), cache.get("key6")), (None, None), "set_many, zero timeout")
    cache.set("key7", "belgian fries", timeout=1)
    eq(cache.touch("key7", timeout=0), True, "touch to zero")
    eq(cache.get("key7"), None, "touched to zero: gone")
    cache.set("key1", "spam", 100.2)
    eq(cache.get("key1"), "spam", "float timeout")
    eq(cache.get_or_set("projector", 42), 42, "get_or_set miss")
    eq(cache.get_or_set("projector", 43), 42, "get_or_set hit")
    cache.set("answer", 37, version=1)
    eq(cache.incr_version("answer"), 2, "incr_version")
    eq((cache.get("answer"), cache.get("answer", version=2)), (None, 37), "incr_version moved the value")
    # Timing: set/add with 1 s, touch extending, set_many with 1 s.
    cache.set("expire1", "very quickly", 1)
    cache.set("expire2", "very quickly", 1)
    eq(cache.add("expire3", "very quickly", 1), True, "add with 1 s")
    cache.set_many({"expire4": "x", "expire5": "y"}, 1)
    cache.set("touched", "value", timeout=1)
    eq(cache.touch("touched", timeout=4), True, "touch existing")
    eq(cache.touch("nonexistent"), False, "touch missing")
    time.sleep(2)
    eq(cache.get("expire1"), None, "expired after 1 s")
    eq(cache.add("expire2", "newvalue"), True, "add over an expired key")
    eq(cache.get("expire2"), "newvalue", "add over an expired key stored")
    eq(cache.has_key("expire3"), False, "has_key of an expired key")
    eq(cache.get_many(["expire4", "expire5"]), {}, "set_many expired")
    eq(cache.has_key("touched"), True, "touch extended the expiry")
    time.sleep(2.5)
    eq(cache.has_key("touched"), False, "touched key expired at its new time")
    return failures
'''

SETTINGS = r'''
SECRET_KEY = "test"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djurls"
INSTALLED_APPS = []
MIDDLEWARE = []
USE_TZ = True
CACHES = {
    "default": {"BACKEND": "uwsgi_django_cache.UWSGICache", "LOCATION": "", "KEY_PREFIX": "site1"},
    # uWSGI's documented form (django-uwsgi-cache's backend path) with a named cache:
    "other": {"BACKEND": "uwsgicache.UWSGICache", "LOCATION": "named", "KEY_PREFIX": "site2"},
}
'''

URLS = r'''
import json
from django.core.cache import caches
from django.http import HttpResponse
from django.urls import path
import djchecks
import uwsgi

def run(request):
    failures = djchecks.run(caches["default"], caches["other"])
    return HttpResponse(json.dumps({"failures": failures, "worker": uwsgi.worker_id()}),
                        content_type="application/json")

urlpatterns = [path("run", run)]
'''

WSGI = r'''
import os
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djsettings")
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
'''


def django_available():
    try:
        import django  # noqa: F401 (Debian's python3-django, in /usr/lib/python3/dist-packages)
        return True
    except ImportError:
        return False


_state = {}


def project():
    if "dir" not in _state:
        d = make_temp_dir("dj-")
        for name, text in [("djchecks.py", CHECKS), ("djsettings.py", SETTINGS), ("djurls.py", URLS),
                           ("djwsgi.py", WSGI)]:
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        _state["dir"] = d
    return _state["dir"]


def start_server():
    if "srv" not in _state:
        port = free_port()
        _state["srv"] = Server(["--socket", f"127.0.0.1:{port}", "--cache2", "name=default,items=1000",
                                "--cache2", "name=named,items=100", "--module", "djwsgi", "--chdir", project(),
                                "--processes", "1", "--threads", "2"], workers=1).start()
        _state["addr"] = ("127.0.0.1", port)
    return _state["srv"], _state["addr"]


def test_backend_inside_a_hosted_django_app():
    if not django_available():
        peer_missing("python3-django is not installed (apt-get install python3-django)")
    srv, addr = start_server()
    pairs = [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/run"), ("QUERY_STRING", ""), ("SERVER_PROTOCOL", "HTTP/1.1"),
             ("SERVER_NAME", "localhost"), ("SERVER_PORT", "80"), ("HTTP_HOST", "localhost"),
             ("REMOTE_ADDR", "127.0.0.1")]
    reply, how = request(addr, packet(0, 0, vars_block(pairs)), timeout=30)
    check(how == "eof" and reply.startswith(b"HTTP/1.1 200"), f"Django view: {reply[:2000]!r} ({how})")
    result = json.loads(reply.partition(b"\r\n\r\n")[2])
    check(not result["failures"], "Django cache expectations failed inside the app:\n  " +
          "\n  ".join(result["failures"]))


def test_backend_from_a_plain_python_process():
    if not django_available():
        peer_missing("python3-django is not installed (apt-get install python3-django)")
    srv, addr = start_server()
    sys.path.insert(0, os.path.join(SOURCE_DIR, "python"))
    sys.path.insert(0, project())
    import django
    from django.conf import settings
    location = f"127.0.0.1:{addr[1]}"
    settings.configure(CACHES={
        "default": {"BACKEND": "uwsgi_django_cache.UWSGICache", "LOCATION": "@" + location, "KEY_PREFIX": "site1"},
        "other": {"BACKEND": "uwsgi_django_cache.UWSGICache", "LOCATION": "named@" + location,
                  "KEY_PREFIX": "site2"},
        "bare": {"BACKEND": "uwsgi_django_cache.UWSGICache", "LOCATION": location},
    })
    django.setup()
    from django.core.cache import caches
    import djchecks
    failures = djchecks.run(caches["default"], caches["other"])
    check(not failures, "Django cache expectations failed through the client:\n  " + "\n  ".join(failures))
    # A bare address is the server's default cache: the same data as "@address".
    caches["default"].set("shared", "value")
    check(caches["bare"].get("shared") is None, "another KEY_PREFIX (none) does not see site1's key")
    caches["bare"].set("plain", 1)
    check(caches["bare"].get("plain") == 1, "bare address location works")


if __name__ == "__main__":
    run_tests([test_backend_inside_a_hosted_django_app, test_backend_from_a_plain_python_process], budget=120)
