#!/usr/bin/env python3
"""Real applications, unchanged, behind a real nginx (Debian's uwsgi_params), under wsgiref.validate, started
the way their docs tell uWSGI users:
- a Django project made at test time by Debian's `django-admin startproject` (`python3 -m django`), with a
  view that counts in the server's cache through the project's Django backend and a form POST with CSRF
  (the token from the form and cookie: 200; without it: 403): `--module mysite.wsgi:application --chdir
  --env DJANGO_SETTINGS_MODULE=...`, 2 processes (the counter is shared by both);
- a Flask app (Debian's python3-flask) with a JSON endpoint, a redirect, a streamed response and a file
  download (send_file: wsgi.file_wrapper): `--wsgi-file app.py --callable app --chdir --pythonpath`, then
  the same app mounted under /flask with --manage-script-name (url_for and redirects carry the prefix)."""
import http.cookies
import json
import os
import re
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from appnginx import uwsgi_front  # noqa: E402
from harness import SOURCE_DIR, Server, check, check_eq, free_port, make_temp_dir, peer_missing, run_tests  # noqa: E402

PY = "/usr/bin/python3"  # Debian's, where python3-django and python3-flask are

VIEWS = r'''
from django.core.cache import cache
from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import get_token

def count(request):
    cache.add("hits", 0, None)
    from django.core.cache import caches
    return JsonResponse({"hits": cache.incr("hits"), "backend": type(caches["default"]).__module__})

def form(request):
    if request.method == "POST":
        return HttpResponse("thanks, " + request.POST["name"], content_type="text/plain")
    token = get_token(request)
    return HttpResponse('<form method="post"><input type="hidden" name="csrfmiddlewaretoken" value="%s">'
                        '<input name="name"></form>' % token)
'''

FLASK_APP = r'''
import os
from flask import Flask, Response, jsonify, redirect, request, send_file, stream_with_context, url_for
from flasklib import GREETING

app = Flask(__name__)

@app.route("/api/<name>")
def api(name):
    return jsonify(greeting=GREETING, name=name, args=request.args.to_dict(), script_root=request.script_root)

@app.route("/go")
def go():
    return redirect(url_for("api", name="redirected"))

@app.route("/stream")
def stream():
    def generate():
        for i in range(100):
            yield "line %d\n" % i
    return Response(stream_with_context(generate()), mimetype="text/plain")

@app.route("/download")
def download():
    return send_file(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data.bin"), as_attachment=True)
'''


def need(module, package):
    if subprocess.run([PY, "-c", f"import {module}"], capture_output=True).returncode != 0:
        peer_missing(f"{package} is not installed (apt-get install {package})")


def nginx_for(port, prefix="/"):
    return uwsgi_front(f"127.0.0.1:{port}", prefix)


def test_django_startproject():
    need("django", "python3-django")
    top = make_temp_dir("djreal-")
    made = subprocess.run([PY, "-m", "django", "startproject", "mysite", top], capture_output=True, timeout=60)
    check(made.returncode == 0, f"django-admin startproject failed: {made.stderr.decode()}")
    with open(os.path.join(top, "mysite", "views.py"), "w") as f:
        f.write(VIEWS)
    with open(os.path.join(top, "mysite", "settings.py"), "a") as f:
        f.write('\nALLOWED_HOSTS = ["127.0.0.1", "localhost"]\n'
                'CACHES = {"default": {"BACKEND": "uwsgi_django_cache.UWSGICache", "LOCATION": "default"}}\n')
    with open(os.path.join(top, "mysite", "urls.py"), "a") as f:
        f.write('\nfrom . import views\nurlpatterns += [path("count/", views.count), path("form/", views.form)]\n')
    port = free_port()
    with Server(["--socket", f"127.0.0.1:{port}", "--module", "mysite.wsgi:application", "--chdir", top,
                 "--env", "DJANGO_SETTINGS_MODULE=mysite.settings", "--processes", "2", "--master",
                 "--cache2", "name=default,items=100"], workers=2), nginx_for(port) as ngx:
        hits = []
        for _ in range(6):
            conn = ngx.connection()  # new connections: both workers take some
            conn.request("GET", "/count/")
            resp = conn.getresponse()
            body = resp.read()
            check_eq(resp.status, 200, f"/count/: {body[:500]!r}")
            got = json.loads(body)
            check_eq(got["backend"], "uwsgi_django_cache", "the view's cache is the project's backend")
            hits.append(got["hits"])
            conn.close()
        check_eq(hits, [1, 2, 3, 4, 5, 6], "one counter in the shared cache, whichever worker answers")
        # CSRF: the form sets the cookie and carries the token; posting both is accepted.
        status, headers, body = ngx.get("/form/")
        check_eq(status, 200, f"GET /form/: {body[:300]!r}")
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1).decode()
        cookie = http.cookies.SimpleCookie(headers["set-cookie"])["csrftoken"].value
        form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "name": "Zoë"})
        status, _, body = ngx.get("/form/", method="POST", body=form, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"csrftoken={cookie}"})
        check_eq((status, body.decode()), (200, "thanks, Zoë"), "POST with the CSRF token")
        status, _, body = ngx.get("/form/", method="POST", body=urllib.parse.urlencode({"name": "x"}),
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        check_eq(status, 403, f"POST without the CSRF token: {body[:200]!r}")
        check(b"CSRF" in body, "Django's CSRF failure page")


def flask_project():
    d = make_temp_dir("flask-")
    lib = make_temp_dir("flasklib-")
    with open(os.path.join(d, "app.py"), "w") as f:
        f.write(FLASK_APP)
    with open(os.path.join(lib, "flasklib.py"), "w") as f:
        f.write('GREETING = "hello from --pythonpath"\n')
    data = os.urandom(200_000)
    with open(os.path.join(d, "data.bin"), "wb") as f:
        f.write(data)
    return d, lib, data


def check_flask(ngx, prefix):
    status, headers, body = ngx.get(prefix + "/api/ann?x=1")
    check_eq(status, 200, f"{prefix}/api: {body[:300]!r}")
    check_eq(headers["content-type"], "application/json", "JSON content type")
    check_eq(json.loads(body), {"greeting": "hello from --pythonpath", "name": "ann", "args": {"x": "1"},
                                "script_root": prefix}, "the JSON endpoint")
    status, headers, _ = ngx.get(prefix + "/go")
    check_eq(status, 302, "the redirect")
    check_eq(urllib.parse.urlsplit(headers["location"]).path, prefix + "/api/redirected", "Location (url_for)")
    status, _, body = ngx.get(prefix + "/stream")
    check_eq((status, body), (200, "".join(f"line {i}\n" for i in range(100)).encode()), "the streamed response")
    status, headers, body = ngx.get(prefix + "/download")
    check_eq(status, 200, "the download")
    check("attachment" in headers.get("content-disposition", ""), f"as attachment: {headers}")
    return body


def test_flask_wsgi_file_callable():
    need("flask", "python3-flask")
    d, lib, data = flask_project()
    port = free_port()
    with Server(["--socket", f"127.0.0.1:{port}", "--wsgi-file", "app.py", "--callable", "app", "--chdir", d,
                 "--pythonpath", lib, "--processes", "2"], workers=2), nginx_for(port) as ngx:
        check(check_flask(ngx, "") == data, "the downloaded file")


def test_flask_mounted_with_manage_script_name():
    need("flask", "python3-flask")
    d, lib, data = flask_project()
    port = free_port()
    with Server(["--socket", f"127.0.0.1:{port}", "--mount", "/flask=app:app", "--manage-script-name",
                 "--chdir", d, "--pythonpath", lib], workers=1), nginx_for(port) as ngx:
        check(check_flask(ngx, "/flask") == data, "the downloaded file under /flask")


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(SOURCE_DIR, "python"))
    run_tests([test_django_startproject, test_flask_wsgi_file_callable, test_flask_mounted_with_manage_script_name],
              budget=150)
